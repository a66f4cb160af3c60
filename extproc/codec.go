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
// as grpc-go's default proto codec and differs in one thing: every marshalled
// message goes into a pooled buffer.
//
// grpc-go's codec marshals messages up to 1 KiB (mem.BufferPoolingThreshold)
// into a fresh slice, and a streamed body reply (one rewritten SSE event,
// typically 0.5-1 KiB) is exactly that size: one garbage buffer per message,
// the largest allocation of the hot path. This codec takes the buffer from
// its own pool with a capacity above the threshold, so mem.NewBuffer treats
// it as a pooled buffer and the transport hands it back after writing it
// (SendMsg frees the encoded message once the frame is queued and written).
// The pool's smallest tier is 2 KiB, so the clearing every pooled buffer gets
// on reuse stays small. Unmarshalling is grpc-go's own.
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

func (c *codec) Marshal(v any) (mem.BufferSlice, error) {
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

func (c *codec) Unmarshal(data mem.BufferSlice, v any) error { return c.base.Unmarshal(data, v) }

// Name is the content-subtype the codec serves: plain "proto", so clients
// (Envoy's gRPC client sends application/grpc) see no difference.
func (c *codec) Name() string { return grpcproto.Name }
