package server

import (
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/distillguard/distillguard/scoring"
)

// In replicated mode (scoring.redis) the scoring engine reads the
// session's shared state from Redis once per request. The session is
// known from the request headers alone (credentials, source.address), so
// the session is derived when the headers arrive and its read starts as
// soon as the reply to them is sent (or when the next message arrives,
// whichever is first: under FULL_DUPLEX_STREAMED the body may come before
// that reply), and Envoy's round trip to send the body (BUFFERED and
// STREAMED: after the headers reply) hides it: the request-body message,
// where scoring runs, finds the state read. Starting it after the reply,
// not before, keeps the read's goroutine and its Redis write off the
// headers message's own latency. prefetchProcessor wraps the ext_proc
// server to do this; the stream is otherwise untouched.
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
	// fetch is the read prepared from the headers, until it is started
	// (then the zero SessionFetch, whose Start does nothing).
	fetch scoring.SessionFetch
}

// start starts the prepared read, once.
func (s *prefetchStream) start() {
	s.fetch.Start()
	s.fetch = scoring.SessionFetch{}
}

// Send is what extproc's loop replies with; the first reply (to the
// request headers, or whatever extproc answers first) starts the read.
func (s *prefetchStream) Send(m *extprocv3.ProcessingResponse) error {
	err := s.ExternalProcessor_ProcessServer.Send(m)
	s.start()
	return err
}

// SendMsg: as Send, for callers of the untyped method.
func (s *prefetchStream) SendMsg(m any) error {
	err := s.ExternalProcessor_ProcessServer.SendMsg(m)
	s.start()
	return err
}

// attrNamespace is where Envoy files the ext_proc filter's request
// attributes (ProcessingRequest.attributes, keyed by filter name).
const attrNamespace = "envoy.filters.http.ext_proc"

// RecvMsg is what extproc's loop calls (it unmarshals into one reused
// message); the first message of a stream is the request headers.
func (s *prefetchStream) RecvMsg(m any) error {
	err := s.ExternalProcessor_ProcessServer.RecvMsg(m)
	if s.seen {
		// A message before any reply: the read must be under way before
		// this message can be scored.
		s.start()
		return err
	}
	if err != nil {
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
	// The id is derived now, before extproc reuses the message; the
	// read starts with the reply (Send).
	s.fetch = s.eng.PrepareFetch(r)
	return nil
}
