package plugin

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// exactCodec is gRPC's proto codec, but a message it marshals is kept in
// a buffer of its own size. gRPC's codec takes one from its shared pool,
// whose tiers are 256 B, 4, 16 and 32 KiB and 1 MiB, and gRPC holds it
// until the message is written: a 40 KiB device list holds 1 MiB. A
// ListAndWatch stream whose client stops reading holds up to three
// messages (gRPC's 64 KiB write quota lets two through; the third waits,
// encoded), which made 3 MiB per stalled stream of such lists instead of
// 120 KiB (TestStalledStreamsBounded). Our messages are few and small:
// pooling saves nothing here.
type exactCodec struct{ encoding.CodecV2 }

func newExactCodec() exactCodec {
	return exactCodec{encoding.GetCodecV2(grpcproto.Name)}
}

// Marshal marshals v with gRPC's codec, copies the result into a buffer
// of its size and gives the pooled buffer back at once.
func (c exactCodec) Marshal(v any) (mem.BufferSlice, error) {
	data, err := c.CodecV2.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("marshal %T: %w", v, err)
	}
	defer data.Free()
	return mem.BufferSlice{mem.SliceBuffer(data.Materialize())}, nil
}
