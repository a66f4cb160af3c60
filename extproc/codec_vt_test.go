//go:build vtprotobuf

package extproc

import (
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// TestCodecUsesGeneratedMarshaller: built with the vtprotobuf tag (as the
// Makefile builds and tests), the replies the server sends take the
// generated marshaller; TestCodecMatchesDefault checks its bytes.
func TestCodecUsesGeneratedMarshaller(t *testing.T) {
	if _, ok := any(&extprocv3.ProcessingResponse{}).(vtMarshaler); !ok {
		t.Fatal("ProcessingResponse has no generated marshaller under the vtprotobuf tag")
	}
}
