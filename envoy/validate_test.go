// Package envoy holds the Envoy configurations shipped with distillguard.
// Its test loads every bootstrap here into go-control-plane's Bootstrap type,
// resolves every typed_config and runs the generated validators
// (protoc-gen-validate rules Envoy itself enforces) on all of them.
package envoy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"gopkg.in/yaml.v3"

	"github.com/distillguard/distillguard/config"

	// Register every type a shipped config may name in a typed_config.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/compressor/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/compressor/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

type validator interface{ ValidateAll() error }

// loadBootstrap reads a YAML bootstrap the way Envoy does (YAML is JSON for
// protobuf purposes), rejecting unknown fields.
func loadBootstrap(path string) (*bootstrapv3.Bootstrap, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("yaml to json: %w", err)
	}
	bs := &bootstrapv3.Bootstrap{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, bs); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return bs, nil
}

// validateTree runs ValidateAll on m and on every message packed in an Any
// anywhere below it, returning how many typed configs it unpacked.
func validateTree(m proto.Message, where string) (int, error) {
	if v, ok := m.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			return 0, fmt.Errorf("%s: %w", where, err)
		}
	}
	n := 0
	var walkErr error
	var walk func(protoreflect.Message, string)
	walk = func(msg protoreflect.Message, path string) {
		if a, ok := msg.Interface().(*anypb.Any); ok {
			inner, err := a.UnmarshalNew()
			if err != nil {
				walkErr = fmt.Errorf("%s: unresolved typed_config %s: %w", path, a.GetTypeUrl(), err)
				return
			}
			n++
			k, err := validateTree(inner, path+"<"+a.GetTypeUrl()+">")
			n += k
			if err != nil && walkErr == nil {
				walkErr = err
			}
			return
		}
		msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			p := path + "." + string(fd.Name())
			switch {
			case fd.IsList() && fd.Message() != nil:
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					walk(l.Get(i).Message(), fmt.Sprintf("%s[%d]", p, i))
				}
			case fd.IsMap() && fd.MapValue().Message() != nil:
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					walk(mv.Message(), p+"["+k.String()+"]")
					return true
				})
			case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
				walk(v.Message(), p)
			}
			return walkErr == nil
		})
	}
	walk(m.ProtoReflect(), where)
	return n, walkErr
}

func bootstraps(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// Kubernetes manifests (Istio, Envoy Gateway) are not bootstraps.
		if !strings.Contains(string(b), "\nkind: ") {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		t.Fatal("no Envoy bootstrap found in envoy/")
	}
	return out
}

func TestBootstrapsValidate(t *testing.T) {
	for _, f := range bootstraps(t) {
		t.Run(f, func(t *testing.T) {
			bs, err := loadBootstrap(f)
			if err != nil {
				t.Fatal(err)
			}
			n, err := validateTree(bs, "bootstrap")
			if err != nil {
				t.Fatal(err)
			}
			if n < 5 {
				t.Fatalf("only %d typed configs resolved; the walker is not reaching the filters", n)
			}
		})
	}
}

// TestStandaloneExtProcSettings pins the ext_proc settings distillguard
// relies on, so an edit to envoy.yaml cannot silently break the contract.
func TestStandaloneExtProcSettings(t *testing.T) {
	bs, err := loadBootstrap("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ep *extprocv3.ExternalProcessor
	var order []string
	var find func(protoreflect.Message)
	find = func(msg protoreflect.Message) {
		if a, ok := msg.Interface().(*anypb.Any); ok {
			inner, err := a.UnmarshalNew()
			if err != nil {
				t.Fatal(err)
			}
			if x, ok := inner.(*extprocv3.ExternalProcessor); ok {
				ep = x
			}
			find(inner.ProtoReflect())
			return
		}
		msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			if fd.Name() == "http_filters" {
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					order = append(order, l.Get(i).Message().Get(fd.Message().Fields().ByName("name")).String())
				}
			}
			switch {
			case fd.IsList() && fd.Message() != nil:
				for i := 0; i < v.List().Len(); i++ {
					find(v.List().Get(i).Message())
				}
			case fd.IsMap() && fd.MapValue().Message() != nil:
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool { find(mv.Message()); return true })
			case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
				find(v.Message())
			}
			return true
		})
	}
	find(bs.ProtoReflect())
	if ep == nil {
		t.Fatal("no ext_proc filter in envoy.yaml")
	}
	pm := ep.GetProcessingMode()
	if got := pm.GetRequestBodyMode().String(); got != "BUFFERED" {
		t.Errorf("request_body_mode = %s, want BUFFERED", got)
	}
	if got := pm.GetResponseBodyMode().String(); got != "STREAMED" {
		t.Errorf("response_body_mode = %s, want STREAMED", got)
	}
	if !ep.GetAllowModeOverride() {
		t.Error("allow_mode_override must be true for JSON responses to be buffered")
	}
	attrs := strings.Join(ep.GetRequestAttributes(), ",")
	for _, want := range []string{"request.time", "source.address"} {
		if !strings.Contains(attrs, want) {
			t.Errorf("request_attributes %q lacks %s", attrs, want)
		}
	}
	ns := ep.GetMetadataOptions().GetReceivingNamespaces().GetUntyped()
	if len(ns) != 1 || ns[0] != "distillguard" {
		t.Errorf("receiving namespaces = %v, want [distillguard]", ns)
	}
	if d := ep.GetMessageTimeout().AsDuration(); d.Milliseconds() < 200 {
		t.Errorf("message_timeout %v is below Envoy's default", d)
	}
	want := []string{"envoy.filters.http.compressor", "envoy.filters.http.ext_proc", "envoy.filters.http.router"}
	if strings.Join(order, ",") != strings.Join(want, ",") {
		t.Errorf("http_filters order = %v, want %v (compressor must precede ext_proc)", order, want)
	}
}

// TestValidatorCatchesErrors proves the loader and the walker reject what
// Envoy would: an unknown field, and a typed config breaking a proto rule
// (ext_proc's message_timeout must be below one hour).
func TestValidatorCatchesErrors(t *testing.T) {
	bs, err := loadBootstrap("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(mustJSON(t, bs), `"grpcService"`, `"grpcServiceX"`, 1)
	if err := protojson.Unmarshal([]byte(broken), &bootstrapv3.Bootstrap{}); err == nil {
		t.Fatal("unknown field accepted")
	}
	ep := &extprocv3.ExternalProcessor{MessageTimeout: durationHours(2)}
	a, err := anypb.New(ep)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := validateTree(a, "x"); err == nil {
		t.Fatal("validator accepted a message_timeout of 2h")
	}
}

func mustJSON(t *testing.T, m proto.Message) string {
	t.Helper()
	b, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func durationHours(h int64) *durationpb.Duration { return &durationpb.Duration{Seconds: h * 3600} }

// TestIstioFilterPatchValidates loads the HTTP filter that the Istio
// EnvoyFilter inserts into go-control-plane's HttpFilter type, so the mesh
// manifest cannot drift from the standalone bootstrap's contract.
func TestIstioFilterPatchValidates(t *testing.T) {
	raw, err := os.ReadFile("istio-envoyfilter.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Spec struct {
			ConfigPatches []struct {
				Patch struct {
					Value any `yaml:"value"`
				} `yaml:"patch"`
			} `yaml:"configPatches"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Spec.ConfigPatches) == 0 {
		t.Fatal("no configPatches")
	}
	for i, p := range doc.Spec.ConfigPatches {
		js, err := json.Marshal(p.Patch.Value)
		if err != nil {
			t.Fatal(err)
		}
		hf := &hcmv3.HttpFilter{}
		if err := protojson.Unmarshal(js, hf); err != nil {
			t.Fatalf("patch %d: %v", i, err)
		}
		n, err := validateTree(hf, fmt.Sprintf("patch[%d]", i))
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("patch %d: %d typed configs, want the ext_proc one", i, n)
		}
		var ep extprocv3.ExternalProcessor
		if err := hf.GetTypedConfig().UnmarshalTo(&ep); err != nil {
			t.Fatal(err)
		}
		if !ep.GetAllowModeOverride() || ep.GetProcessingMode().GetResponseBodyMode().String() != "STREAMED" {
			t.Errorf("patch %d: ext_proc settings differ from envoy.yaml", i)
		}
	}
}

// TestBufferLimitsFitMaxBody: Envoy refuses a BUFFERED body above its
// buffer limit, so the limit must cover distillguard's max_body_bytes.
func TestBufferLimitsFitMaxBody(t *testing.T) {
	bs, err := loadBootstrap("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := uint32(config.Default().Processing.MaxBodyBytes)
	for _, l := range bs.GetStaticResources().GetListeners() {
		if got := l.GetPerConnectionBufferLimitBytes().GetValue(); got < want {
			t.Errorf("listener %s buffer limit %d < %d", l.GetName(), got, want)
		}
	}
	for _, c := range bs.GetStaticResources().GetClusters() {
		if c.GetName() != "inference" {
			continue
		}
		if got := c.GetPerConnectionBufferLimitBytes().GetValue(); got < want {
			t.Errorf("cluster %s buffer limit %d < %d", c.GetName(), got, want)
		}
	}
}

// TestReplicasBootstrap pins what the replicated example relies on: several
// distillguard hosts in one cluster, health-checked, and a message_timeout
// an order of magnitude above the Redis call deadline of the embedded
// default, so a slow Redis degrades scoring without failing requests.
func TestReplicasBootstrap(t *testing.T) {
	bs, err := loadBootstrap("envoy-replicas.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var hosts int
	for _, c := range bs.GetStaticResources().GetClusters() {
		if c.GetName() != "distillguard" {
			continue
		}
		for _, le := range c.GetLoadAssignment().GetEndpoints() {
			hosts += len(le.GetLbEndpoints())
		}
		if len(c.GetHealthChecks()) == 0 || c.GetHealthChecks()[0].GetGrpcHealthCheck() == nil {
			t.Error("distillguard cluster has no gRPC health check")
		}
		if c.GetOutlierDetection() == nil {
			t.Error("distillguard cluster has no outlier detection")
		}
	}
	if hosts < 3 {
		t.Fatalf("distillguard cluster has %d hosts, want at least 3", hosts)
	}
	var timeout float64
	var find func(protoreflect.Message)
	find = func(msg protoreflect.Message) {
		if a, ok := msg.Interface().(*anypb.Any); ok {
			inner, err := a.UnmarshalNew()
			if err != nil {
				t.Fatal(err)
			}
			if x, ok := inner.(*extprocv3.ExternalProcessor); ok {
				timeout = x.GetMessageTimeout().AsDuration().Seconds()
			}
			find(inner.ProtoReflect())
			return
		}
		msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			switch {
			case fd.IsList() && fd.Message() != nil:
				for i := 0; i < v.List().Len(); i++ {
					find(v.List().Get(i).Message())
				}
			case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
				find(v.Message())
			}
			return true
		})
	}
	find(bs.ProtoReflect())
	deadline := config.Default().Scoring.Redis.CallTimeout.Seconds()
	if timeout < 10*deadline {
		t.Errorf("message_timeout %.3fs is not 10x the Redis call deadline %.3fs", timeout, deadline)
	}
}

// TestTransportVariants: envoy-mtls.yaml and envoy-unix.yaml are
// envoy.yaml with the distillguard cluster changed only in how it is
// reached: mutual TLS (an UpstreamTlsContext that verifies distillguard's
// certificate and name, presents Envoy's own, and speaks h2) or a unix
// socket (a pipe address); everything else, the ext_proc filter included,
// is the same.
func TestTransportVariants(t *testing.T) {
	base, err := loadBootstrap("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cluster := func(bs *bootstrapv3.Bootstrap) int {
		for i, c := range bs.GetStaticResources().GetClusters() {
			if c.GetName() == "distillguard" {
				return i
			}
		}
		t.Fatal("no distillguard cluster")
		return -1
	}
	for _, f := range []string{"envoy-mtls.yaml", "envoy-unix.yaml"} {
		t.Run(f, func(t *testing.T) {
			bs, err := loadBootstrap(f)
			if err != nil {
				t.Fatal(err)
			}
			c := bs.GetStaticResources().GetClusters()[cluster(bs)]
			ep := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress()
			switch f {
			case "envoy-mtls.yaml":
				ts := c.GetTransportSocket()
				if ts == nil {
					t.Fatal("no transport_socket")
				}
				var tc tlsv3.UpstreamTlsContext
				if err := ts.GetTypedConfig().UnmarshalTo(&tc); err != nil {
					t.Fatal(err)
				}
				ctx := tc.GetCommonTlsContext()
				if len(ctx.GetTlsCertificates()) != 1 || ctx.GetValidationContext().GetTrustedCa().GetFilename() == "" ||
					len(ctx.GetValidationContext().GetMatchTypedSubjectAltNames()) == 0 || tc.GetSni() == "" {
					t.Errorf("the TLS context does not both verify distillguard and present a client certificate: %v", &tc)
				}
				if !slices.Contains(ctx.GetAlpnProtocols(), "h2") {
					t.Error("no h2 ALPN: distillguard's TLS listener offers only h2")
				}
				if ep.GetSocketAddress() == nil {
					t.Error("not a socket address")
				}
			case "envoy-unix.yaml":
				if ep.GetPipe().GetPath() == "" {
					t.Errorf("not a pipe address: %v", ep)
				}
			}
			// Apart from the cluster's address and transport, the same
			// bootstrap as envoy.yaml.
			want := proto.Clone(base).(*bootstrapv3.Bootstrap)
			got := proto.Clone(bs).(*bootstrapv3.Bootstrap)
			for _, b := range []*bootstrapv3.Bootstrap{want, got} {
				c := b.GetStaticResources().GetClusters()[cluster(b)]
				c.TransportSocket, c.LoadAssignment, c.ClusterDiscoveryType = nil, nil, nil
			}
			if !proto.Equal(want, got) {
				t.Errorf("%s differs from envoy.yaml beyond the distillguard cluster's address and transport", f)
			}
		})
	}
}
