package manifest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	appsv1 "k8s.io/api/apps/v1"
)

func envoyFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "envoy", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEnvoyGatewayManifest decodes envoy/envoy-gateway-extensionpolicy.yaml
// into Envoy Gateway's Go API type and pins the settings distillguard
// relies on (the same contract as envoy/envoy.yaml).
func TestEnvoyGatewayManifest(t *testing.T) {
	o, err := Decode(envoyFile(t, "envoy-gateway-extensionpolicy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p, ok := o.Typed.(*egv1a1.EnvoyExtensionPolicy)
	if !ok {
		t.Fatalf("decoded as %T", o.Typed)
	}
	if len(p.Spec.TargetRefs) == 0 || len(p.Spec.ExtProc) != 1 {
		t.Fatalf("targetRefs %d, extProc %d", len(p.Spec.TargetRefs), len(p.Spec.ExtProc))
	}
	ep := p.Spec.ExtProc[0]
	if len(ep.BackendRefs) != 1 || ep.BackendRefs[0].Port == nil || *ep.BackendRefs[0].Port != 50051 {
		t.Errorf("backendRefs %+v", ep.BackendRefs)
	}
	if ep.FailOpen == nil || *ep.FailOpen {
		t.Error("failOpen must be false (fail closed)")
	}
	if ep.MessageTimeout == nil || *ep.MessageTimeout != "500ms" {
		t.Errorf("messageTimeout %v", ep.MessageTimeout)
	}
	pm := ep.ProcessingMode
	if pm == nil || pm.Request == nil || pm.Response == nil {
		t.Fatal("processingMode must send request and response")
	}
	if pm.Request.Body == nil || *pm.Request.Body != egv1a1.BufferedExtProcBodyProcessingMode {
		t.Errorf("request body %v, want Buffered", pm.Request.Body)
	}
	if pm.Response.Body == nil || *pm.Response.Body != egv1a1.StreamedExtProcBodyProcessingMode {
		t.Errorf("response body %v, want Streamed", pm.Response.Body)
	}
	if !pm.AllowModeOverride {
		t.Error("allowModeOverride must be true")
	}
	for _, a := range []string{"request.time", "source.address"} {
		if !slices.Contains(pm.Request.Attributes, a) {
			t.Errorf("request attributes %v lack %s", pm.Request.Attributes, a)
		}
	}
	if ep.Metadata == nil || !slices.Equal(ep.Metadata.WritableNamespaces, []string{"distillguard"}) {
		t.Errorf("metadata %+v, want writableNamespaces [distillguard]", ep.Metadata)
	}
}

// TestIstioManifest decodes envoy/istio-envoyfilter.yaml into istio.io/api's
// EnvoyFilter and its patch into the Envoy HTTP filter.
func TestIstioManifest(t *testing.T) {
	o, err := Decode(envoyFile(t, "istio-envoyfilter.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ef := o.Typed.(*EnvoyFilter)
	if ef.Spec.GetWorkloadSelector().GetLabels()["app"] == "" {
		t.Error("no workload selector")
	}
	if len(ef.Filters) != 1 || ef.Filters[0] == nil {
		t.Fatalf("filters %v", ef.Filters)
	}
	if ef.Filters[0].GetName() != "envoy.filters.http.ext_proc" {
		t.Errorf("filter %s", ef.Filters[0].GetName())
	}
	ep := &extprocv3.ExternalProcessor{}
	if err := ef.Filters[0].GetTypedConfig().UnmarshalTo(ep); err != nil {
		t.Fatal(err)
	}
	pm := ep.GetProcessingMode()
	if pm.GetRequestBodyMode() != extprocv3.ProcessingMode_BUFFERED || pm.GetResponseBodyMode() != extprocv3.ProcessingMode_STREAMED {
		t.Errorf("body modes %v/%v", pm.GetRequestBodyMode(), pm.GetResponseBodyMode())
	}
	if !ep.GetAllowModeOverride() || ep.GetFailureModeAllow() {
		t.Error("want allow_mode_override true and failure_mode_allow false")
	}
	if !slices.Equal(ep.GetRequestAttributes(), []string{"request.time", "source.address"}) {
		t.Errorf("request_attributes %v", ep.GetRequestAttributes())
	}
	if ns := ep.GetMetadataOptions().GetReceivingNamespaces().GetUntyped(); !slices.Equal(ns, []string{"distillguard"}) {
		t.Errorf("receiving namespaces %v", ns)
	}
	if d := ep.GetMessageTimeout().AsDuration(); d.Milliseconds() != 500 {
		t.Errorf("message_timeout %v", d)
	}
}

const deployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: x
  namespace: ns
spec:
  selector:
    matchLabels: {app: x}
  template:
    metadata:
      labels: {app: x}
    spec:
      containers:
      - name: x
        image: x
`

// TestStrictness proves the decoder rejects what the API server's strict
// field validation or the CRD schemas would: these are the mistakes it is
// there to catch.
func TestStrictness(t *testing.T) {
	eg := string(envoyFile(t, "envoy-gateway-extensionpolicy.yaml"))
	istio := string(envoyFile(t, "istio-envoyfilter.yaml"))
	if _, err := Decode([]byte(deployment)); err != nil {
		t.Fatalf("valid Deployment rejected: %v", err)
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown field", strings.Replace(deployment, "        image: x\n", "        image: x\n        imagePolicy: Always\n", 1), `unknown field "imagePolicy"`},
		{"duplicate key", strings.Replace(deployment, "  name: x\n", "  name: x\n  name: z\n", 1), `key "name" already set`},
		{"wrong type", strings.Replace(deployment, "spec:\n  selector", "spec:\n  replicas: two\n  selector", 1), "replicas"},
		{"no name", strings.Replace(deployment, "  name: x\n", "", 1), "metadata.name is empty"},
		{"unknown kind", strings.Replace(deployment, "kind: Deployment", "kind: Deploymnet", 1), "no Go type known"},
		// The pre-v1alpha1 layout envoy-gateway-extensionpolicy.yaml once had.
		{"eg attributes at the wrong level", strings.Replace(eg, "    messageTimeout: 500ms\n", "    messageTimeout: 500ms\n    attributes:\n      request: [request.time]\n", 1), `unknown field "attributes"`},
		{"eg metadataOptions", strings.Replace(eg, "    metadata:\n      writableNamespaces", "    metadataOptions:\n      writableNamespaces", 1), `unknown field "metadataOptions"`},
		{"eg body mode", strings.Replace(eg, "body: Buffered", "body: BUFFERED", 1), ""},
		{"istio spec field", strings.Replace(istio, "  workloadSelector:", "  workloadSelektor:", 1), "workloadSelektor"},
		{"istio enum", strings.Replace(istio, "applyTo: HTTP_FILTER", "applyTo: HTTP_FILTR", 1), "HTTP_FILTR"},
		{"istio top-level field", istio + "status: {}\n", `unknown top-level field "status"`},
		{"ext_proc field", strings.Replace(istio, "allow_mode_override: true", "allow_mode_overide: true", 1), "allow_mode_overide"},
		{"ext_proc rule", strings.Replace(istio, "message_timeout: 0.5s", "message_timeout: 7200s", 1), "MessageTimeout"},
		{"unresolved typed_config", strings.Replace(istio, "ext_proc.v3.ExternalProcessor", "ext_proc.v3.ExternalProcessorX", 1), "ExternalProcessorX"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.doc))
			if tc.want == "" {
				// Envoy Gateway's enum is a kubebuilder marker, checked by
				// the CRD schema, not by the Go type: decoding accepts it,
				// which is why the tests above pin the value itself.
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.doc)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q lacks %q", err, tc.want)
			}
		})
	}
}

func TestSplitYAML(t *testing.T) {
	stream := "---\n# Source: a\n" + deployment + "---\n# only a comment\n---\n" + deployment
	docs, err := SplitYAML([]byte(stream))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 2 {
		t.Fatalf("%d documents, want 2", len(docs))
	}
	objs, err := DecodeAll([]byte(stream))
	if err != nil || len(objs) != 2 {
		t.Fatalf("%d objects, %v", len(objs), err)
	}
	if _, ok := objs[1].Typed.(*appsv1.Deployment); !ok {
		t.Errorf("decoded as %T", objs[1].Typed)
	}
}

// FuzzDecode: any input gives an object or an error, never a panic.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(deployment))
	f.Add(envoyFile(f, "istio-envoyfilter.yaml"))
	f.Add(envoyFile(f, "envoy-gateway-extensionpolicy.yaml"))
	f.Add([]byte("apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ndata: {k: '!!'}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		objs, err := DecodeAll(b)
		if err == nil {
			for _, o := range objs {
				if o.Typed == nil || o.Name == "" {
					t.Fatalf("object without type or name: %+v", o)
				}
			}
		}
	})
}
