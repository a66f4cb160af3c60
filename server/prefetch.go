package server

import (
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/distillguard/distillguard/scoring"
)

// In replicated mode (scoring.redis) the scoring engine reads the
// session's shared state from Redis once per request. The session is
// known from the request headers alone (credentials, source.address), so
// the read starts when the headers arrive, and Envoy's round trip to send
// the body (BUFFERED: after the headers reply) hides it: the request-body
// message, where scoring runs, finds the state read. prefetchProcessor
// wraps the ext_proc server to start that read; the stream is otherwise
// untouched.
type prefetchProcessor struct {
	extprocv3.ExternalProcessorServer
	eng *scoring.Engine
}

func (p prefetchProcessor) Process(st extprocv3.ExternalProcessor_ProcessServer) error {
	return p.ExternalProcessorServer.Process(&prefetchStream{ExternalProcessor_ProcessServer: st, eng: p.eng})
}

type prefetchStream struct {
	extprocv3.ExternalProcessor_ProcessServer
	eng  *scoring.Engine
	seen bool
}

// attrNamespace is where Envoy files the ext_proc filter's request
// attributes (ProcessingRequest.attributes, keyed by filter name).
const attrNamespace = "envoy.filters.http.ext_proc"

// RecvMsg is what extproc's loop calls (it unmarshals into one reused
// message); the first message of a stream is the request headers.
func (s *prefetchStream) RecvMsg(m any) error {
	err := s.ExternalProcessor_ProcessServer.RecvMsg(m)
	if err != nil || s.seen {
		return err
	}
	s.seen = true
	req, ok := m.(*extprocv3.ProcessingRequest)
	if !ok {
		return nil
	}
	h := req.GetRequestHeaders().GetHeaders()
	if h == nil {
		return nil
	}
	r := &scoring.Request{Header: func(name string) string {
		for _, v := range h.GetHeaders() {
			if v.GetKey() == name {
				// Envoy sends values in raw_value (HttpHeaders.headers).
				if len(v.GetRawValue()) > 0 {
					return string(v.GetRawValue())
				}
				return v.GetValue()
			}
		}
		return ""
	}}
	if a := req.GetAttributes()[attrNamespace]; a != nil {
		r.SourceAddress = a.GetFields()["source.address"].GetStringValue()
	}
	// The id is derived now, before extproc reuses the message.
	s.eng.Prefetch(r)
	return nil
}
