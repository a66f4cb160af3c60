package helm

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

func containerEnv(t *testing.T, args ...string) map[string]corev1.EnvVar {
	t.Helper()
	d := one[*appsv1.Deployment](t, render(t, "distillguard", args...), "Deployment")
	env := map[string]corev1.EnvVar{}
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		if _, dup := env[e.Name]; dup {
			t.Errorf("env %s set twice", e.Name)
		}
		env[e.Name] = e
	}
	return env
}

// TestOTelDefaultsRenderNothing: without an endpoint the server gets no
// OTEL_* variable, so it exports nothing and does not trace.
func TestOTelDefaultsRenderNothing(t *testing.T) {
	for name := range containerEnv(t) {
		if strings.HasPrefix(name, "OTEL_") {
			t.Errorf("default values render %s", name)
		}
	}
	env := containerEnv(t, "--set", "otel.serviceName=guard-eu")
	if env["OTEL_SERVICE_NAME"].Value != "guard-eu" || len(env) != 1 {
		t.Errorf("serviceName alone: env %v", env)
	}
}

// TestOTelEnv: the otel values become the standard variables, the headers
// come from the Secret, and the pod's identity joins the resource through
// variables defined before OTEL_RESOURCE_ATTRIBUTES refers to them.
func TestOTelEnv(t *testing.T) {
	env := containerEnv(t, "--set", strings.Join([]string{
		"otel.endpoint=http://otel-collector.observability:4318",
		"otel.protocol=http/protobuf",
		"otel.headersSecret.name=otlp-auth",
		"otel.headersSecret.key=headers",
		"otel.serviceName=guard-eu",
		"otel.resourceAttributes.deployment\\.environment\\.name=prod",
		"otel.tracesSampler=parentbased_traceidratio",
		"otel.tracesSamplerArg=0.25",
		"otel.metricExportIntervalMillis=15000",
	}, ","))
	for k, want := range map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318",
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
		"OTEL_SERVICE_NAME":           "guard-eu",
		"OTEL_TRACES_SAMPLER":         "parentbased_traceidratio",
		"OTEL_TRACES_SAMPLER_ARG":     "0.25",
		"OTEL_METRIC_EXPORT_INTERVAL": "15000",
		"OTEL_RESOURCE_ATTRIBUTES": "k8s.pod.name=$(OTEL_K8S_POD_NAME),k8s.namespace.name=$(OTEL_K8S_NAMESPACE_NAME)," +
			"k8s.node.name=$(OTEL_K8S_NODE_NAME),service.instance.id=$(OTEL_K8S_POD_UID),deployment.environment.name=prod",
	} {
		if got := env[k].Value; got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if ref := env["OTEL_EXPORTER_OTLP_HEADERS"].ValueFrom.SecretKeyRef; ref == nil || ref.Name != "otlp-auth" || ref.Key != "headers" || env["OTEL_EXPORTER_OTLP_HEADERS"].Value != "" {
		t.Errorf("OTEL_EXPORTER_OTLP_HEADERS = %+v, want a secretKeyRef to otlp-auth/headers", env["OTEL_EXPORTER_OTLP_HEADERS"])
	}
	for k, path := range map[string]string{"OTEL_K8S_POD_NAME": "metadata.name", "OTEL_K8S_NAMESPACE_NAME": "metadata.namespace", "OTEL_K8S_NODE_NAME": "spec.nodeName", "OTEL_K8S_POD_UID": "metadata.uid"} {
		if f := env[k].ValueFrom; f == nil || f.FieldRef == nil || f.FieldRef.FieldPath != path {
			t.Errorf("%s = %+v, want fieldRef %s", k, env[k], path)
		}
	}
	// Per-signal endpoints alone turn the block on too.
	env = containerEnv(t, "--set", "otel.tracesEndpoint=http://tempo:4317")
	if env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"].Value != "http://tempo:4317" || env["OTEL_EXPORTER_OTLP_PROTOCOL"].Value != "grpc" {
		t.Errorf("tracesEndpoint alone: env %v", env)
	}
	if _, ok := env["OTEL_EXPORTER_OTLP_ENDPOINT"]; ok {
		t.Error("tracesEndpoint alone renders OTEL_EXPORTER_OTLP_ENDPOINT")
	}
}

func TestOTelRefusedValues(t *testing.T) {
	for _, tc := range []struct{ set, want string }{
		{"otel.protocol=http", "/otel/protocol"},
		{"otel.endpoint=otel-collector:4317", "/otel/endpoint"},
		{"otel.tracesSampler=ratio", "/otel/tracesSampler"},
		{"otel.resourceAttributes.team=a\\,b", "/otel/resourceAttributes"},
		{"otel.metricExportIntervalMillis=-1", "/otel/metricExportIntervalMillis"},
		{"otel.endpoint=http://c:4317,otel.headersSecret.name=s", "otel.headersSecret.key"},
	} {
		t.Run(tc.set, func(t *testing.T) {
			_, err := helm(t, "template", "dg", chartDir, "--set", tc.set)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("--set %s: error %v, want one naming %q", tc.set, err, tc.want)
			}
		})
	}
}
