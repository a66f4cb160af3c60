package extproc

import (
	"fmt"

	grpcenc "google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Codec returns the gRPC codec the ext_proc server is meant to be served
// with (grpc.ForceServerCodecV2(extproc.Codec())). It writes the same bytes
// as grpc-go's default proto codec and differs in two things: every
// marshalled message goes into a pooled buffer, and messages that carry
// go-control-plane's generated vtprotobuf marshallers are written by them.
//
// grpc-go's codec marshals messages up to 1 KiB (mem.BufferPoolingThreshold)
// into a fresh slice, and a streamed body reply (one rewritten SSE event,
// typically 0.5-1 KiB) is exactly that size: one garbage buffer per message,
// the largest allocation of the hot path. This codec takes the buffer from
// its own pool with a capacity above the threshold, so mem.NewBuffer treats
// it as a pooled buffer and the transport hands it back after writing it
// (SendMsg frees the encoded message once the frame is queued and written).
// The pool's smallest tier is 2 KiB, so the clearing every pooled buffer gets
// on reuse stays small. Unmarshalling is grpc-go's, with the same pool for a
// message that came in several frames (see Unmarshal).
//
// go-control-plane ships vtprotobuf's generated SizeVT and
// MarshalToSizedBufferVTStrict methods for every Envoy message, compiled in
// with the vtprotobuf build tag (the Makefile and the image set it; see
// https://github.com/planetscale/vtprotobuf). They write what proto.Marshal
// writes, in field-number order, without protobuf-go's reflection over the
// message: about a third of its time for a token-event reply
// (BenchmarkCodecMarshal). Built without the tag, the methods do not exist
// and every message takes protobuf-go's path: the same bytes, slower.
//
// Each call returns a codec with its own pool; use one per grpc.Server.
func Codec() grpcenc.CodecV2 {
	// Every power of two from 2 KiB (just above the pooling threshold) to
	// 1 MiB, so a buffered body's reply (typically tens to hundreds of KiB)
	// takes at most twice its size; grpc-go's default tiers jump from
	// 32 KiB to 1 MiB. Larger messages get a buffer of their own size from
	// the pool's fallback.
	pool, err := mem.NewBinaryTieredBufferPool(11, 12, 13, 14, 15, 16, 17, 18, 19, 20)
	if err != nil {
		panic(err) // constant, valid exponents
	}
	return &codec{pool: pool, base: grpcenc.GetCodecV2(grpcproto.Name)}
}

type codec struct {
	pool mem.BufferPool
	base grpcenc.CodecV2
}

// minPooledCap is the capacity requested for messages smaller than it: the
// smallest one mem.NewBuffer pools (it pools by capacity, not length).
const minPooledCap = 2 << 10

// smallMessage is the size below which a plain allocation is cheaper than a
// pool round trip (headers and trailers replies are a few bytes).
const smallMessage = 64

// vtMarshaler is the part of vtprotobuf's generated API the codec uses
// (MarshalToSizedBufferVTStrict fills the whole slice it is given, from the
// end, and returns its length).
type vtMarshaler interface {
	SizeVT() int
	MarshalToSizedBufferVTStrict(dAtA []byte) (int, error)
}

func (c *codec) Marshal(v any) (mem.BufferSlice, error) {
	if vm, ok := v.(vtMarshaler); ok {
		return c.marshalVT(vm)
	}
	m, ok := v.(proto.Message)
	if !ok {
		return c.base.Marshal(v) // also handles protoadapt.MessageV1
	}
	size := proto.Size(m)
	if size < smallMessage {
		return c.base.Marshal(v)
	}
	buf := c.pool.Get(max(size, minPooledCap))
	// UseCachedSize reuses the size proto.Size just stored in the message
	// (as grpc-go's codec does); nothing mutates it in between.
	out, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend((*buf)[:0], m)
	if err != nil {
		c.pool.Put(buf)
		return nil, fmt.Errorf("extproc codec: %w", err)
	}
	if cap(out) != cap(*buf) {
		// MarshalAppend outgrew the buffer (cannot happen with a cached
		// size): out is a fresh slice and buf goes back unused.
		c.pool.Put(buf)
		return mem.BufferSlice{mem.SliceBuffer(out)}, nil
	}
	*buf = out
	return mem.BufferSlice{mem.NewBuffer(buf, c.pool)}, nil
}

// marshalVT writes m with its generated marshaller: small messages into a
// slice of their own, the rest into a pooled buffer (as Marshal).
func (c *codec) marshalVT(m vtMarshaler) (mem.BufferSlice, error) {
	size := m.SizeVT()
	if size < smallMessage {
		b := make([]byte, size)
		if _, err := m.MarshalToSizedBufferVTStrict(b); err != nil {
			return nil, fmt.Errorf("extproc codec: %w", err)
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := c.pool.Get(max(size, minPooledCap))
	n, err := m.MarshalToSizedBufferVTStrict((*buf)[:size])
	if err != nil || n != size {
		c.pool.Put(buf)
		if err == nil {
			err = fmt.Errorf("marshalled %d bytes of %d", n, size)
		}
		return nil, fmt.Errorf("extproc codec: %w", err)
	}
	*buf = (*buf)[:size]
	return mem.BufferSlice{mem.NewBuffer(buf, c.pool)}, nil
}

// Unmarshal is grpc-go's, but a message that arrived in several HTTP/2
// frames (anything over 16 KiB: a buffered body) is joined in a buffer from
// the codec's own pool. grpc-go's codec joins it in its default pool, whose
// tiers jump from 32 KiB to 1 MiB, and the pool clears a buffer's whole
// capacity on every Get: a 100 KB body cost a 1 MiB clear, about a tenth
// of the server's time on such a workload. Here the buffer is the next power
// of two, at most twice the message.
func (c *codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok || len(data) == 1 {
		return c.base.Unmarshal(data, v) // one frame: read in place
	}
	buf := data.MaterializeToBuffer(c.pool)
	defer buf.Free()
	if err := proto.Unmarshal(buf.ReadOnlyData(), m); err != nil {
		return fmt.Errorf("extproc codec: %w", err)
	}
	return nil
}

// Name is the content-subtype the codec serves: plain "proto", so clients
// (Envoy's gRPC client sends application/grpc) see no difference.
func (c *codec) Name() string { return grpcproto.Name }
