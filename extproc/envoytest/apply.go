package envoytest

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

func commonOf(m *extprocv3.ProcessingResponse) *extprocv3.CommonResponse {
	switch x := m.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		return x.RequestHeaders.GetResponse()
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		return x.ResponseHeaders.GetResponse()
	case *extprocv3.ProcessingResponse_RequestBody:
		return x.RequestBody.GetResponse()
	case *extprocv3.ProcessingResponse_ResponseBody:
		return x.ResponseBody.GetResponse()
	}
	return nil
}

func trailerMutationOf(m *extprocv3.ProcessingResponse) *extprocv3.HeaderMutation {
	switch x := m.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestTrailers:
		return x.RequestTrailers.GetHeaderMutation()
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		return x.ResponseTrailers.GetHeaderMutation()
	}
	return nil
}

// applyHeaderMutation is MutationUtils::applyHeaderMutations.
func (r *run) applyHeaderMutation(hm *extprocv3.HeaderMutation, h *headerList, skipContentLength bool) error {
	for _, k := range hm.GetRemoveHeaders() {
		if !validName(k) {
			return errors.New("invalid character in remove_headers mutation")
		}
		k = strings.ToLower(k)
		if strings.HasPrefix(k, ":") || k == "host" {
			continue // "Attempts to remove system headers ... will be ignored"
		}
		switch r.check(k) {
		case checkOK:
			h.remove(k)
		case checkFail:
			return fmt.Errorf("invalid attempt to remove %s", k)
		}
	}
	for _, o := range hm.GetSetHeaders() {
		hv := o.GetHeader()
		if hv == nil {
			continue
		}
		k := strings.ToLower(hv.GetKey())
		if skipContentLength && k == "content-length" {
			continue
		}
		if hv.GetValue() != "" && len(hv.GetRawValue()) > 0 {
			return errors.New("only one of value or raw_value in the HeaderValue message should be set")
		}
		if hv.GetValue() != "" {
			r.violate("header %q set with value only: Envoy reads raw_value and sets it empty", k)
		}
		v := string(hv.GetRawValue())
		if !validName(k) || !validValue(v) {
			return errors.New("invalid character in set_headers mutation")
		}
		switch r.check(k) {
		case checkOK:
			// Envoy's ext_proc reads only the deprecated `append` and not
			// append_action (mutation_utils.cc, applyHeaderMutations).
			//lint:ignore SA1019 the field Envoy reads
			if o.GetAppend().GetValue() { // "defaults to false when used in this message"
				h.add(k, v)
			} else {
				h.set(k, v)
			}
		case checkFail:
			return fmt.Errorf("invalid attempt to modify %s", k)
		}
	}
	return nil
}

type checkResult int

const (
	checkOK checkResult = iota
	checkIgnore
	checkFail
)

func (r *run) check(key string) checkResult {
	mr := r.cfg.MutationRules
	deny := mr.DisallowAll ||
		(!mr.AllowAllRouting && (key == "host" || key == ":authority" || key == ":scheme" || key == ":method")) ||
		(!mr.AllowEnvoy && strings.HasPrefix(key, "x-envoy")) ||
		(mr.DisallowSystem && strings.HasPrefix(key, ":"))
	switch {
	case !deny:
		return checkOK
	case mr.DisallowIsError:
		return checkFail
	}
	return checkIgnore
}

// applyBody applies a non-streamed body mutation to a chunk.
func (r *run) applyBody(bm *extprocv3.BodyMutation, chunk []byte) ([]byte, bool) {
	switch m := bm.GetMutation().(type) {
	case nil:
		return chunk, true
	case *extprocv3.BodyMutation_Body:
		return m.Body, true
	case *extprocv3.BodyMutation_ClearBody:
		if m.ClearBody {
			return nil, true
		}
		return chunk, true
	}
	return nil, false // streamed_response outside FULL_DUPLEX_STREAMED
}

func (r *run) modeOverride(mo *procv3.ProcessingMode, header bool) {
	cm := r.cfg.ProcessingMode
	if !r.cfg.AllowModeOverride || !header ||
		cm.GetRequestBodyMode() == procv3.ProcessingMode_FULL_DUPLEX_STREAMED ||
		cm.GetResponseBodyMode() == procv3.ProcessingMode_FULL_DUPLEX_STREAMED {
		return // ignored by Envoy
	}
	var next *procv3.ProcessingMode
	if r.cfg.LiteralModeOverride {
		next = proto.Clone(mo).(*procv3.ProcessingMode)
	} else {
		// effectiveModeOverride: DEFAULT header/trailer modes keep the
		// filter's configuration; body modes are always explicit.
		next = proto.Clone(cm).(*procv3.ProcessingMode)
		if mo.GetRequestHeaderMode() != procv3.ProcessingMode_DEFAULT {
			next.RequestHeaderMode = mo.GetRequestHeaderMode()
		}
		if mo.GetResponseHeaderMode() != procv3.ProcessingMode_DEFAULT {
			next.ResponseHeaderMode = mo.GetResponseHeaderMode()
		}
		if mo.GetRequestTrailerMode() != procv3.ProcessingMode_DEFAULT {
			next.RequestTrailerMode = mo.GetRequestTrailerMode()
		}
		if mo.GetResponseTrailerMode() != procv3.ProcessingMode_DEFAULT {
			next.ResponseTrailerMode = mo.GetResponseTrailerMode()
		}
		next.RequestBodyMode = mo.GetRequestBodyMode()
		next.ResponseBodyMode = mo.GetResponseBodyMode()
	}
	r.mode = next
	r.res.ModeOverrides++
}

func (r *run) acceptMetadata(m *extprocv3.ProcessingResponse, kind string) {
	dm := m.GetDynamicMetadata()
	if dm == nil {
		return
	}
	accepted := false
	for ns, v := range dm.GetFields() {
		if !slices.Contains(r.cfg.ReceivingNamespaces, ns) {
			continue // "namespace not configured for receiving"
		}
		s := v.GetStructValue()
		if s == nil {
			continue
		}
		cur := r.res.Metadata[ns]
		if cur == nil {
			cur = &structpb.Struct{Fields: map[string]*structpb.Value{}}
			r.res.Metadata[ns] = cur
		}
		for k, fv := range s.GetFields() {
			cur.Fields[k] = fv
		}
		accepted = true
	}
	if accepted {
		r.res.MetadataOn = append(r.res.MetadataOn, kind)
	}
}

func (r *run) immediate(ir *extprocv3.ImmediateResponse) {
	r.res.Immediate = ir
	if r.respStarted {
		// DownstreamFilterManager::sendLocalReply once the response
		// headers were encoded: there is no reply left to send, the
		// stream is reset and the client sees a broken response.
		r.res.Reset = true
		r.res.LocalReply = "reset_after_response_started"
		r.local = true
		r.complete = true
		return
	}
	code := int(ir.GetStatus().GetCode())
	if code < 200 {
		code = 200 // DefaultImmediateStatus; invalid codes are ignored
	}
	r.localReply(code, ir.GetBody(), ir.GetHeaders(), strings.ReplaceAll(ir.GetDetails(), " ", "_"))
}

// localReply is sendLocalReply: the body as text/plain with its length,
// then the processor's header mutations (errors only logged by Envoy).
func (r *run) localReply(code int, body []byte, hm *extprocv3.HeaderMutation, details string) {
	h := &headerList{}
	if len(body) > 0 {
		h.set("content-type", "text/plain")
	}
	h.set("content-length", strconv.Itoa(len(body)))
	if hm != nil {
		if err := r.applyHeaderMutation(hm, h, false); err != nil {
			r.violate("immediate response header mutation: %v", err)
		}
	}
	r.res.Status = code
	r.res.Header = h.http()
	r.res.Body = body
	r.res.LocalReply = details
	r.local = true
	r.complete = true
}
