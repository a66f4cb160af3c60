package extproc

import (
	"bytes"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	grpcenc "google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

func bodyReplyOf(n int, fill byte) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{
		Response: &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{
			Mutation: &extprocv3.BodyMutation_Body{Body: bytes.Repeat([]byte{fill}, n)},
		}},
	}}}
}

// TestCodecMatchesDefault: the codec writes the bytes grpc-go's proto codec
// writes, for every size class (below, at and above the pooling threshold,
// past each pool tier) and every kind of reply, and reads them back the same
// way. With the vtprotobuf tag a message with a oneof and a later field
// (mode_override after response) has its fields in field-number order where
// protobuf-go writes the oneof last: the same fields, the same length, the
// same message decoded.
func TestCodecMatchesDefault(t *testing.T) {
	c := Codec()
	base := grpcenc.GetCodecV2(grpcproto.Name)
	if c.Name() != base.Name() {
		t.Fatalf("codec name %q, want %q (the content-subtype Envoy sends)", c.Name(), base.Name())
	}
	cases := []struct {
		name string
		msg  proto.Message
	}{
		{"headers reply", &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}},
		{"empty body reply", bodyReplyOf(0, 'x')},
		{"small", bodyReplyOf(50, 'a')},
		{"token event", bodyReplyOf(700, 'b')},
		{"at threshold", bodyReplyOf(1015, 'c')},
		{"above threshold", bodyReplyOf(1030, 'd')},
		{"2 KiB", bodyReplyOf(2048, 'e')},
		{"5 KiB", bodyReplyOf(5000, 'f')},
		{"64 KiB", bodyReplyOf(64<<10, 'g')},
		{"2 MiB", bodyReplyOf(2<<20, 'h')},
		{"headers mutation", &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{
			Response: &extprocv3.CommonResponse{Status: extprocv3.CommonResponse_CONTINUE_AND_REPLACE, HeaderMutation: &extprocv3.HeaderMutation{
				SetHeaders:    []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-distillguard-verdict", RawValue: []byte("degrade")}}},
				RemoveHeaders: []string{"content-length"},
			}, BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: bytes.Repeat([]byte("r"), 300)}}},
		}}}},
		{"immediate response", &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests}, Body: []byte(`{"error":{"message":"slow down"}}`), Details: "distillguard_throttle",
			Headers: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "retry-after", RawValue: []byte("30")}}}},
		}}}},
		{"mode override", &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}},
			ModeOverride: &procmodev3.ProcessingMode{ResponseBodyMode: procmodev3.ProcessingMode_NONE, ResponseTrailerMode: procmodev3.ProcessingMode_SKIP}}},
		{"streamed body", &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{
			Response: &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_StreamedResponse{
				StreamedResponse: &extprocv3.StreamedBodyResponse{Body: bytes.Repeat([]byte("s"), 800), EndOfStream: true}}}}}}}},
		{"request", &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":path", RawValue: []byte("/v1/chat/completions")}}}}}}},
	}
	// The generated marshaller may order these messages' fields
	// differently (see above).
	reordered := map[string]bool{"mode override": true}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, err := base.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			defer want.Free()
			got, err := c.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			// The point of the codec: every message but the smallest sits
			// in a pooled buffer (mem.SliceBuffer is grpc-go's unpooled
			// kind), returned to the pool when the transport frees it.
			if _, plain := got[0].(mem.SliceBuffer); plain != (proto.Size(tc.msg) < smallMessage) {
				t.Errorf("%d-byte message: unpooled buffer = %v", proto.Size(tc.msg), plain)
			}
			gotBytes := got.Materialize()
			if len(gotBytes) != want.Len() || !reordered[tc.name] && !bytes.Equal(gotBytes, want.Materialize()) {
				t.Fatalf("codec wrote %d bytes that differ from the default codec's %d", len(gotBytes), want.Len())
			}
			back := tc.msg.ProtoReflect().New().Interface()
			if err := c.Unmarshal(got, back); err != nil {
				t.Fatal(err)
			}
			got.Free()
			if !proto.Equal(back, tc.msg) {
				t.Fatal("round trip changed the message")
			}
		})
	}
}

// TestCodecMetadata: a reply with dynamic metadata (map fields, whose
// order proto does not fix) decodes to the same message.
func TestCodecMetadata(t *testing.T) {
	c := Codec()
	meta, err := structpb.NewStruct(map[string]any{"distillguard": map[string]any{"verdict": "allow", "score": 0.5, "shadow": false}})
	if err != nil {
		t.Fatal(err)
	}
	msg := bodyReplyOf(900, 'm')
	msg.DynamicMetadata = meta
	bs, err := c.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	back := &extprocv3.ProcessingResponse{}
	if err := c.Unmarshal(bs, back); err != nil {
		t.Fatal(err)
	}
	bs.Free()
	if !proto.Equal(back, msg) {
		t.Fatal("round trip changed the message")
	}
}

// TestCodecPooledBuffersStayIntact: a buffer handed back to the pool is
// reused for the next message, and a message still referenced is never
// overwritten by a later one.
func TestCodecPooledBuffersStayIntact(t *testing.T) {
	c := Codec()
	held := make([]mem.BufferSlice, 0, 8)
	for i := range 8 {
		bs, err := c.Marshal(bodyReplyOf(600+i*100, byte('a'+i)))
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			held = append(held, bs) // still "on the wire"
		} else {
			bs.Free() // written: back to the pool
		}
	}
	for k, bs := range held {
		i := 2 * k
		back := &extprocv3.ProcessingResponse{}
		if err := proto.Unmarshal(bs.Materialize(), back); err != nil {
			t.Fatal(err)
		}
		body := back.GetResponseBody().GetResponse().GetBodyMutation().GetBody()
		if want := bytes.Repeat([]byte{byte('a' + i)}, 600+i*100); !bytes.Equal(body, want) {
			t.Fatalf("message %d was overwritten while held", i)
		}
		bs.Free()
	}
}

func TestCodecRejectsNonProto(t *testing.T) {
	if _, err := Codec().Marshal(struct{}{}); err == nil {
		t.Fatal("marshalling a non-proto value succeeded")
	}
}

// BenchmarkCodecMarshal: a token-event body reply through the pooled codec
// and through grpc-go's default one (marshal, then the transport's Free).
func BenchmarkCodecMarshal(b *testing.B) {
	msg := bodyReplyOf(700, 'x')
	eachCodec(b, func(b *testing.B, c grpcenc.CodecV2) {
		for b.Loop() {
			bs, err := c.Marshal(msg)
			if err != nil {
				b.Fatal(err)
			}
			bs.Free()
		}
	})
}

// eachCodec runs f as a sub-benchmark for the server's codec ("pooled")
// and for grpc-go's default one, allocations reported.
func eachCodec(b *testing.B, f func(*testing.B, grpcenc.CodecV2)) {
	for _, c := range []struct {
		name  string
		codec grpcenc.CodecV2
	}{{"pooled", Codec()}, {"grpc-default", grpcenc.GetCodecV2(grpcproto.Name)}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			f(b, c.codec)
		})
	}
}

// frames splits b the way the transport hands a message over: one buffer
// per HTTP/2 DATA frame of at most 16 KiB.
func frames(b []byte) mem.BufferSlice {
	var s mem.BufferSlice
	for len(b) > 0 {
		n := min(len(b), 16<<10)
		s = append(s, mem.SliceBuffer(b[:n]))
		b = b[n:]
	}
	return s
}

// TestCodecUnmarshalFrames: a message of one frame and of many (a buffered
// body) decodes to the message that was sent, and a truncated one is an
// error, not a partial message.
func TestCodecUnmarshalFrames(t *testing.T) {
	c := Codec()
	for _, n := range []int{0, 700, 16 << 10, 100 << 10, 1 << 20, 3 << 20} {
		msg := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{
			Body: bytes.Repeat([]byte{'q'}, n), EndOfStream: true}}}
		wire, err := proto.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		back := &extprocv3.ProcessingRequest{}
		if err := c.Unmarshal(frames(wire), back); err != nil {
			t.Fatalf("%d-byte body: %v", n, err)
		}
		if !proto.Equal(back, msg) {
			t.Fatalf("%d-byte body: decoded message differs", n)
		}
		if n > 0 {
			if err := c.Unmarshal(frames(wire[:len(wire)-1]), &extprocv3.ProcessingRequest{}); err == nil {
				t.Fatalf("%d-byte body: truncated message decoded without error", n)
			}
		}
	}
}

// BenchmarkCodecUnmarshal100K: a 100 KB buffered body as the transport
// delivers it (16 KiB frames), through the codec and grpc-go's default.
func BenchmarkCodecUnmarshal100K(b *testing.B) {
	msg := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{
		Body: bytes.Repeat([]byte{'q'}, 100<<10), EndOfStream: true}}}
	wire, err := proto.Marshal(msg)
	if err != nil {
		b.Fatal(err)
	}
	data := frames(wire)
	eachCodec(b, func(b *testing.B, c grpcenc.CodecV2) {
		b.SetBytes(int64(len(wire)))
		back := &extprocv3.ProcessingRequest{}
		for b.Loop() {
			if err := c.Unmarshal(data, back); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// FuzzCodecUnmarshal: whatever the bytes and however the transport split
// them, the codec accepts exactly what grpc-go's codec accepts and decodes
// it to the same message.
func FuzzCodecUnmarshal(f *testing.F) {
	for _, m := range []proto.Message{bodyReplyOf(700, 'a'), &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocv3.HttpBody{Body: bytes.Repeat([]byte("z"), 40<<10), EndOfStream: true}}}} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint16(1000))
	}
	f.Add([]byte{0x0a, 0xff, 0xff}, uint16(1))
	c, base := Codec(), grpcenc.GetCodecV2(grpcproto.Name)
	f.Fuzz(func(t *testing.T, b []byte, split uint16) {
		n := max(int(split), 1)
		var data mem.BufferSlice
		for rest := b; len(rest) > 0; {
			k := min(n, len(rest))
			data = append(data, mem.SliceBuffer(rest[:k]))
			rest = rest[k:]
		}
		got, want := &extprocv3.ProcessingRequest{}, &extprocv3.ProcessingRequest{}
		gerr, werr := c.Unmarshal(data, got), base.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, want)
		if (gerr == nil) != (werr == nil) {
			t.Fatalf("codec error %v, grpc-go's %v", gerr, werr)
		}
		if gerr == nil && !proto.Equal(got, want) {
			t.Fatal("codec decoded another message than grpc-go's")
		}
	})
}
