// Package keys names what distillguard and Envoy's ext_proc filter exchange
// besides headers and bodies: the request attributes the filter sends
// (ProcessingRequest.attributes, configured by
// ExternalProcessor.request_attributes) and the dynamic metadata distillguard
// returns (ProcessingResponse.dynamic_metadata). The server (extproc), the
// Envoy emulation (extproc/envoytest), the load generator (bench) and the
// attack lab (lab) all spell them through these constants.
//
// It is a package of its own so that both extproc and envoytest can import
// it: extproc's tests import envoytest, so envoytest cannot import extproc.
package keys

// Request attributes.
const (
	// AttributeNamespace is the key ProcessingRequest.attributes files the
	// evaluated request_attributes under: the ext_proc filter's name.
	AttributeNamespace = "envoy.filters.http.ext_proc"
	// RequestTime is the request.time attribute: when the request started,
	// rendered as an RFC 3339 timestamp.
	RequestTime = "request.time"
	// SourceAddress is the source.address attribute: the downstream peer's
	// ip:port.
	SourceAddress = "source.address"
)

// Dynamic metadata.
const (
	// MetadataNamespace is the dynamic-metadata namespace distillguard
	// writes its decision under; Envoy accepts it only when it is listed in
	// metadata_options.receiving_namespaces.untyped.
	MetadataNamespace = "distillguard"

	// Verdict is the scorer's verdict: allow, degrade, throttle or block.
	Verdict = "verdict"
	// Action is the verdict enforced: Verdict, or allow in shadow mode.
	Action = "action"
	// Score is the session's risk score, a number in [0, 1].
	Score = "score"
	// Session is the session id the request was scored under.
	Session = "session"
	// Signals maps the strongest signals' names to their contributions.
	Signals = "signals"
	// Policy is the name of the policy set the route resolved to.
	Policy = "policy"
	// Shadow is true when the decision was only tagged, not enforced.
	Shadow = "shadow"
	// Probation is true when the identity has not earned standing yet and
	// the route's probation tier was enforced in place of allow.
	Probation = "probation"
	// Watermark is the id of the watermark key that marks the response,
	// set when the enforced tier has output.watermark and a key is
	// configured (the id a verification report and the evidence export
	// name).
	Watermark = "watermark_key"
	// Refused is set instead of a decision when distillguard refused the
	// exchange before scoring it (a request body it does not accept, or a
	// response it cannot rewrite): the reason, e.g. "duplicate_member".
	Refused = "refused"
)
