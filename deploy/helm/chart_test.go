// Package helm tests the distillguard Helm chart: helm lint, helm template
// with the defaults and with every optional part on, every rendered object
// decoded strictly into its API type, the rendered config file checked by
// the real server binary, and the Envoy attachments compared with the
// manifests in envoy/.
package helm

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"google.golang.org/protobuf/proto"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/yaml"

	"github.com/distillguard/distillguard/deploy/internal/manifest"
	"github.com/distillguard/distillguard/deploy/internal/testtool"
)

const chartDir = "distillguard"

// helmBin builds the Helm CLI pinned in deploy/go.mod (tool directive) once
// per test binary; HELM names an existing binary instead.
var helmBin = sync.OnceValues(func() (string, error) {
	if h := os.Getenv("HELM"); h != "" {
		return h, nil
	}
	dir, err := os.MkdirTemp("", "distillguard-helm-")
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "helm")
	cmd := exec.Command("go", "build", "-o", out, "helm.sh/helm/v3/cmd/helm")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build helm: %v\n%s", err, b)
	}
	return out, nil
})

// serverBin is the distillguard binary the rendered configs are checked with.
var serverBin = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "distillguard-srv-")
	if err != nil {
		return "", err
	}
	return testtool.BuildServerIn(dir)
})

func TestMain(m *testing.M) {
	code := m.Run()
	for _, f := range []func() (string, error){helmBin, serverBin} {
		if p, err := f(); err == nil && os.Getenv("HELM") != p {
			os.RemoveAll(filepath.Dir(p))
		}
	}
	os.Exit(code)
}

func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin, err := helmBin()
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	// No kubeconfig or repository state of the machine leaks in.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home, "KUBECONFIG="+filepath.Join(home, "none"))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// render runs helm template and decodes every object strictly.
func render(t *testing.T, namespace string, args ...string) []*manifest.Object {
	t.Helper()
	out, err := helm(t, append([]string{"template", "dg", chartDir, "--namespace", namespace}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := manifest.DecodeAll([]byte(out))
	if err != nil {
		t.Fatalf("rendered chart does not decode strictly:\n%v", err)
	}
	for _, o := range objs {
		for _, msg := range validation.IsDNS1123Subdomain(o.Name) {
			t.Errorf("%s name %q: %s", o.Kind, o.Name, msg)
		}
		if o.Namespace == "" {
			t.Errorf("%s %s has no namespace", o.Kind, o.Name)
		}
	}
	return objs
}

func kinds(objs []*manifest.Object) []string {
	var k []string
	for _, o := range objs {
		k = append(k, o.Kind)
	}
	sort.Strings(k)
	return k
}

func one[T any](t *testing.T, objs []*manifest.Object, kind string) T {
	t.Helper()
	f := manifest.Find(objs, kind)
	if len(f) != 1 {
		t.Fatalf("%d %s objects, want 1", len(f), kind)
	}
	v, ok := f[0].Typed.(T)
	if !ok {
		t.Fatalf("%s decoded as %T", kind, f[0].Typed)
	}
	return v
}

func TestLint(t *testing.T) {
	for _, args := range [][]string{nil, {"-f", "testdata/all-on.yaml"}} {
		out, err := helm(t, append([]string{"lint", "--strict", chartDir}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "0 chart(s) failed") {
			t.Fatalf("helm lint %v:\n%s", args, out)
		}
	}
	// Lint runs the templates: values the chart refuses fail it.
	if _, err := helm(t, "lint", "--strict", chartDir, "--set", "secretDelivery=bogus"); err == nil {
		t.Fatal("helm lint accepted secretDelivery=bogus")
	}
}

func TestDefaults(t *testing.T) {
	objs := render(t, "distillguard")
	want := []string{"Deployment", "PodDisruptionBudget", "Secret", "Service", "ServiceAccount"}
	if got := kinds(objs); !slices.Equal(got, want) {
		t.Fatalf("default objects %v, want %v", got, want)
	}
	d := one[*appsv1.Deployment](t, objs, "Deployment")
	pod := d.Spec.Template.Spec
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("replicas %v, want 2", d.Spec.Replicas)
	}
	sel, err := metav1LabelSelector(d.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("selector %v does not match the pod labels %v", sel, d.Spec.Template.Labels)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	assertHardened(t, pod, c)

	if got := strings.Join(c.Args, " "); !strings.Contains(got, "-admin-addr 0.0.0.0:9090") || !strings.Contains(got, "-config /etc/distillguard/config/config.yaml") {
		t.Errorf("args %q: want the config file and the admin port on every address", got)
	}
	port := func(name string) int32 {
		for _, p := range c.Ports {
			if p.Name == name {
				return p.ContainerPort
			}
		}
		t.Errorf("container has no port %s", name)
		return 0
	}
	if port("grpc") != 50051 || port("admin") != 9090 {
		t.Errorf("container ports %+v", c.Ports)
	}
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Fatalf("%s probe is not an HTTP GET", name)
		}
		wantPath := map[string]string{"liveness": "/healthz", "readiness": "/readyz"}[name]
		if p.HTTPGet.Path != wantPath || p.HTTPGet.Port.String() != "admin" {
			t.Errorf("%s probe GET %s on %s, want %s on admin", name, p.HTTPGet.Path, p.HTTPGet.Port.String(), wantPath)
		}
	}

	svc := one[*corev1.Service](t, objs, "Service")
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("Service selector %v does not select the pods", svc.Spec.Selector)
	}
	sp := map[string]corev1.ServicePort{}
	for _, p := range svc.Spec.Ports {
		sp[p.Name] = p
	}
	if g := sp["grpc"]; g.Port != 50051 || g.AppProtocol == nil || *g.AppProtocol != "grpc" || g.TargetPort.String() != "grpc" {
		t.Errorf("grpc service port %+v", g)
	}
	if a := sp["admin"]; a.Port != 9090 || a.TargetPort.String() != "admin" {
		t.Errorf("admin service port %+v", a)
	}

	pdb := one[*policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget")
	psel, err := metav1LabelSelector(pdb.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if !psel.Matches(labels.Set(d.Spec.Template.Labels)) || pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PDB %+v", pdb.Spec)
	}

	// Inline delivery: the config is a Secret mounted as the config dir.
	cfg := configFile(t, objs, d)
	checkConfig(t, cfg)
	var parsed map[string]any
	if err := yaml.Unmarshal([]byte(cfg), &parsed); err != nil {
		t.Fatal(err)
	}
	server := parsed["server"].(map[string]any)
	if server["admin_addr"] != "0.0.0.0:9090" || server["grpc_addr"] != ":50051" || server["drain_grace"] != "20s" {
		t.Errorf("rendered server section %v", server)
	}
}

// assertHardened checks the pod and container security settings the chart
// promises (restricted Pod Security Standard).
func assertHardened(t *testing.T, pod corev1.PodSpec, c corev1.Container) {
	t.Helper()
	ps, sc := pod.SecurityContext, c.SecurityContext
	if ps == nil || sc == nil {
		t.Fatal("missing security contexts")
	}
	if ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser != 65532 {
		t.Errorf("pod security context %+v", ps)
	}
	if ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod seccomp %+v", ps.SeccompProfile)
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("container runAsNonRoot not set")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem not set")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation not false")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("capabilities %+v, want drop [ALL]", sc.Capabilities)
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("container seccomp %+v", sc.SeccompProfile)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("service account token is mounted; the server calls no Kubernetes API")
	}
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly {
			t.Errorf("volume %s mounted read-write", m.Name)
		}
	}
}

// configFile returns the rendered distillguard config: the config.yaml key of
// the ConfigMap or Secret behind the Deployment's "config" volume.
func configFile(t *testing.T, objs []*manifest.Object, d *appsv1.Deployment) string {
	t.Helper()
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name != "config" {
			continue
		}
		switch {
		case v.ConfigMap != nil:
			for _, o := range manifest.Find(objs, "ConfigMap") {
				if o.Name == v.ConfigMap.Name {
					return o.Typed.(*corev1.ConfigMap).Data["config.yaml"]
				}
			}
		case v.Secret != nil:
			for _, o := range manifest.Find(objs, "Secret") {
				if o.Name == v.Secret.SecretName {
					s := o.Typed.(*corev1.Secret)
					if c, ok := s.StringData["config.yaml"]; ok {
						return c
					}
					return string(s.Data["config.yaml"])
				}
			}
		}
		t.Fatalf("config volume %+v points at no rendered object", v)
	}
	t.Fatal("Deployment has no config volume")
	return ""
}

// checkConfig runs `distillguard -check-config` on the rendered config.
// The secret files it names (scoring.secret_file, admin.token_file,
// scoring.redis.password_file) are what the pod mounts from a Secret: the
// check stands them in with files of the same kind in a temporary
// directory, so the loader reads them as it would in the pod.
func checkConfig(t *testing.T, cfg string) {
	t.Helper()
	bin, err := serverBin()
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(cfg), &doc); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := 0
	standIn := func(section map[string]any, key, content string) {
		if section == nil {
			return
		}
		if _, ok := section[key].(string); !ok {
			return
		}
		files++ // one file per stood-in key: two sections both have key_file
		p := filepath.Join(dir, fmt.Sprintf("%d-%s", files, key))
		if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		section[key] = p
	}
	scoring, _ := doc["scoring"].(map[string]any)
	admin, _ := doc["admin"].(map[string]any)
	var redis map[string]any
	if scoring != nil {
		redis, _ = scoring["redis"].(map[string]any)
	}
	standIn(scoring, "secret_file", "chart-test-scoring-secret-0123456789abcdef0123456789")
	standIn(admin, "token_file", "chart-test-admin-token")
	standIn(redis, "password_file", "chart-test-redis-password")
	watermarkCfg, _ := doc["watermark"].(map[string]any)
	evidenceCfg, _ := doc["evidence"].(map[string]any)
	standIn(watermarkCfg, "key_file", strings.Repeat("c4", 32))
	standIn(evidenceCfg, "key_file", strings.Repeat("e7", 32))
	text, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(p, text, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-check-config", "-config", p).CombinedOutput()
	if err != nil {
		t.Fatalf("the server rejects the rendered config: %v\n%s\n--- config:\n%s", err, out, cfg)
	}
	if !strings.Contains(string(out), "config ok") {
		t.Fatalf("check-config printed %q", out)
	}
}

func TestEverythingOn(t *testing.T) {
	objs := render(t, "distillguard", "-f", "testdata/all-on.yaml")
	want := []string{"ConfigMap", "Deployment", "EnvoyExtensionPolicy", "EnvoyFilter", "HorizontalPodAutoscaler",
		"NetworkPolicy", "PodDisruptionBudget", "ReferenceGrant", "Secret", "Service", "ServiceAccount", "ServiceMonitor"}
	if got := kinds(objs); !slices.Equal(got, want) {
		t.Fatalf("objects %v, want %v", got, want)
	}
	d := one[*appsv1.Deployment](t, objs, "Deployment")
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	assertHardened(t, pod, c)
	if d.Spec.Replicas != nil {
		t.Errorf("replicas %d set although the HPA owns the count", *d.Spec.Replicas)
	}
	if !slices.Contains(c.Args, "-pprof") {
		t.Errorf("extraArgs missing from %q", c.Args)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["GOMEMLIMIT"] != "900MiB" || env["TZ"] != "UTC" {
		t.Errorf("env %v", env)
	}
	if d.Spec.Template.Annotations["checksum/secret"] == "" || d.Spec.Template.Annotations["checksum/config"] == "" {
		t.Errorf("checksum annotations missing: %v", d.Spec.Template.Annotations)
	}

	// Files delivery: the config names files in the mounted Secrets.
	cfg := configFile(t, objs, d)
	var doc struct {
		Server struct {
			TLS map[string]string `json:"tls"`
		} `json:"server"`
		Scoring struct {
			Shadow     bool   `json:"shadow"`
			SecretFile string `json:"secret_file"`
			Redis      struct {
				Addrs        []string `json:"addrs"`
				PasswordFile string   `json:"password_file"`
			} `json:"redis"`
		} `json:"scoring"`
		Admin struct {
			TokenFile string `json:"token_file"`
		} `json:"admin"`
		Watermark struct {
			KeyFile string `json:"key_file"`
		} `json:"watermark"`
		Evidence struct {
			KeyFile string `json:"key_file"`
		} `json:"evidence"`
	}
	if err := yaml.Unmarshal([]byte(cfg), &doc); err != nil {
		t.Fatal(err)
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	fileIn := func(path, volume string) {
		t.Helper()
		if !strings.HasPrefix(path, mounts[volume]+"/") || mounts[volume] == "" {
			t.Errorf("%s is not under the %s mount (%s)", path, volume, mounts[volume])
		}
	}
	fileIn(doc.Scoring.SecretFile, "secrets")
	fileIn(doc.Admin.TokenFile, "secrets")
	fileIn(doc.Scoring.Redis.PasswordFile, "redis-secret")
	fileIn(doc.Server.TLS["cert_file"], "tls")
	fileIn(doc.Server.TLS["client_ca_file"], "tls")
	fileIn(doc.Watermark.KeyFile, "watermark")
	fileIn(doc.Evidence.KeyFile, "watermark")
	if v := vols["watermark"].Secret; v == nil || v.SecretName != "distillguard-watermark" {
		t.Errorf("extra volume %+v", vols["watermark"])
	}
	if !doc.Scoring.Shadow || !slices.Equal(doc.Scoring.Redis.Addrs, []string{"redis-0.redis:6379", "redis-1.redis:6379"}) {
		t.Errorf("scoring section %+v", doc.Scoring)
	}
	if vols["redis-secret"].Secret == nil || vols["redis-secret"].Secret.SecretName != "redis-auth" {
		t.Errorf("redis secret volume %+v", vols["redis-secret"])
	}
	sec := manifest.Find(objs, "Secret")[0].Typed.(*corev1.Secret)
	if vols["secrets"].Secret == nil || vols["secrets"].Secret.SecretName != sec.Name {
		t.Errorf("secrets volume %+v, chart Secret %s", vols["secrets"], sec.Name)
	}
	if string(sec.Data["scoring-secret"]) != "test-scoring-secret-0123456789abcdef0123456789abcdef" || string(sec.Data["admin-token"]) != "test-admin-token" {
		t.Errorf("Secret data keys %v", keysOf(sec.Data))
	}
	if strings.Contains(cfg, "test-admin-token") || strings.Contains(cfg, "test-scoring-secret") {
		t.Error("files delivery leaked a secret into the ConfigMap")
	}
	if pod.SecurityContext.FSGroup == nil || *pod.SecurityContext.FSGroup != 65532 {
		t.Error("fsGroup must be 65532 so the 0440 secret files are readable")
	}
	checkConfig(t, cfg)

	hpa := one[*autoscalingv2.HorizontalPodAutoscaler](t, objs, "HorizontalPodAutoscaler")
	if hpa.Spec.ScaleTargetRef.Kind != "Deployment" || hpa.Spec.ScaleTargetRef.Name != d.Name || hpa.Spec.MaxReplicas != 12 || *hpa.Spec.MinReplicas != 3 {
		t.Errorf("HPA %+v", hpa.Spec)
	}

	np := one[*networkingv1.NetworkPolicy](t, objs, "NetworkPolicy")
	npSel, err := metav1LabelSelector(&np.Spec.PodSelector)
	if err != nil {
		t.Fatal(err)
	}
	if !npSel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Error("NetworkPolicy does not select the pods")
	}
	if len(np.Spec.Ingress) != 2 {
		t.Fatalf("%d ingress rules, want gRPC and admin", len(np.Spec.Ingress))
	}
	for i, wantPort := range []string{"grpc", "admin"} {
		r := np.Spec.Ingress[i]
		if len(r.Ports) != 1 || r.Ports[0].Port.String() != wantPort || len(r.From) == 0 {
			t.Errorf("ingress rule %d %+v, want port %s from listed peers", i, r, wantPort)
		}
	}
	if got := np.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"]; got != "envoy-gateway-system" {
		t.Errorf("gRPC peers %+v", np.Spec.Ingress[0].From)
	}
	if got := np.Spec.Ingress[1].From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"]; got != "monitoring" || len(np.Spec.Ingress[1].From) != 2 {
		t.Errorf("admin peers %+v", np.Spec.Ingress[1].From)
	}

	sm := one[*monitoringv1.ServiceMonitor](t, objs, "ServiceMonitor")
	svc := one[*corev1.Service](t, objs, "Service")
	if sm.Namespace != "monitoring" || len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "admin" || sm.Spec.Endpoints[0].Path != "/metrics" ||
		!slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{"distillguard"}) {
		t.Errorf("ServiceMonitor %+v", sm.Spec)
	}
	smSel, err := metav1LabelSelector(&sm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if !smSel.Matches(labels.Set(svc.Labels)) {
		t.Error("ServiceMonitor does not select the Service")
	}

	// Envoy Gateway in another namespace: the policy names the Service's
	// namespace and a ReferenceGrant admits it.
	eep := one[*egv1a1.EnvoyExtensionPolicy](t, objs, "EnvoyExtensionPolicy")
	if eep.Namespace != "inference" {
		t.Errorf("EnvoyExtensionPolicy in %s, want the route's namespace", eep.Namespace)
	}
	br := eep.Spec.ExtProc[0].BackendRefs[0]
	if string(br.Name) != svc.Name || br.Namespace == nil || string(*br.Namespace) != "distillguard" || br.Port == nil || *br.Port != 50051 {
		t.Errorf("backendRef %+v", br.BackendObjectReference)
	}
	rg := one[*gwv1beta1.ReferenceGrant](t, objs, "ReferenceGrant")
	if rg.Namespace != "distillguard" || string(rg.Spec.From[0].Namespace) != "inference" || string(rg.Spec.From[0].Kind) != "EnvoyExtensionPolicy" ||
		string(rg.Spec.To[0].Kind) != "Service" || rg.Spec.To[0].Name == nil || string(*rg.Spec.To[0].Name) != svc.Name {
		t.Errorf("ReferenceGrant %+v", rg.Spec)
	}

	ef := one[*manifest.EnvoyFilter](t, objs, "EnvoyFilter")
	ep := extProcOf(t, ef)
	if want := "outbound|50051||dg-distillguard.distillguard.svc.cluster.local"; ep.GetGrpcService().GetEnvoyGrpc().GetClusterName() != want {
		t.Errorf("cluster %q, want %q", ep.GetGrpcService().GetEnvoyGrpc().GetClusterName(), want)
	}
}

func extProcOf(t *testing.T, ef *manifest.EnvoyFilter) *extprocv3.ExternalProcessor {
	t.Helper()
	if len(ef.Filters) != 1 || ef.Filters[0] == nil {
		t.Fatalf("EnvoyFilter inserts %d filters", len(ef.Filters))
	}
	ep := &extprocv3.ExternalProcessor{}
	if err := ef.Filters[0].GetTypedConfig().UnmarshalTo(ep); err != nil {
		t.Fatal(err)
	}
	return ep
}

func keysOf(m map[string][]byte) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

// TestDrainDerived: terminationGracePeriodSeconds, the preStop sleep and
// server.drain_grace all come from drain.*, so the kubelet never kills a pod
// that is still inside its drain grace.
func TestDrainDerived(t *testing.T) {
	for _, tc := range []struct{ grace, preStop int }{{20, 5}, {60, 10}, {0, 0}, {5, 0}} {
		t.Run(fmt.Sprintf("grace%d_prestop%d", tc.grace, tc.preStop), func(t *testing.T) {
			objs := render(t, "distillguard", "--set", fmt.Sprintf("drain.graceSeconds=%d,drain.preStopSleepSeconds=%d", tc.grace, tc.preStop))
			d := one[*appsv1.Deployment](t, objs, "Deployment")
			pod := d.Spec.Template.Spec
			if got := *pod.TerminationGracePeriodSeconds; got != int64(tc.preStop+tc.grace+5) {
				t.Errorf("terminationGracePeriodSeconds %d, want %d", got, tc.preStop+tc.grace+5)
			}
			lc := pod.Containers[0].Lifecycle
			if tc.preStop == 0 {
				if lc != nil && lc.PreStop != nil {
					t.Errorf("preStop %+v rendered for 0 s", lc.PreStop)
				}
			} else if lc == nil || lc.PreStop == nil || lc.PreStop.Sleep == nil || lc.PreStop.Sleep.Seconds != int64(tc.preStop) {
				t.Errorf("preStop %+v, want sleep %d", lc, tc.preStop)
			}
			var doc struct {
				Server struct {
					DrainGrace string `json:"drain_grace"`
				} `json:"server"`
			}
			cfg := configFile(t, objs, d)
			if err := yaml.Unmarshal([]byte(cfg), &doc); err != nil {
				t.Fatal(err)
			}
			if doc.Server.DrainGrace != fmt.Sprintf("%ds", tc.grace) {
				t.Errorf("drain_grace %q, want %ds", doc.Server.DrainGrace, tc.grace)
			}
			checkConfig(t, cfg)
		})
	}
}

// TestMirrorsEnvoyManifests renders the Envoy attachments with the names the
// manifests in envoy/ use and requires the same specs: the chart and the
// standalone manifests cannot drift apart.
func TestMirrorsEnvoyManifests(t *testing.T) {
	read := func(t *testing.T, name string) *manifest.Object {
		b, err := os.ReadFile(filepath.Join(testtool.Root(t), "envoy", name))
		if err != nil {
			t.Fatal(err)
		}
		o, err := manifest.Decode(b)
		if err != nil {
			t.Fatalf("envoy/%s: %v", name, err)
		}
		return o
	}
	t.Run("istio", func(t *testing.T) {
		objs := render(t, "distillguard", "--set", "fullnameOverride=distillguard,istio.enabled=true,istio.namespace=inference")
		got := one[*manifest.EnvoyFilter](t, objs, "EnvoyFilter")
		want := read(t, "istio-envoyfilter.yaml").Typed.(*manifest.EnvoyFilter)
		if !proto.Equal(got.Spec, want.Spec) {
			t.Errorf("chart EnvoyFilter spec differs from envoy/istio-envoyfilter.yaml:\nchart: %v\nfile:  %v", got.Spec, want.Spec)
		}
		if got.Metadata.Namespace != want.Metadata.Namespace {
			t.Errorf("namespace %s, file %s", got.Metadata.Namespace, want.Metadata.Namespace)
		}
	})
	t.Run("envoy-gateway", func(t *testing.T) {
		// The file's policy and Service share the route's namespace.
		objs := render(t, "inference", "--set", "fullnameOverride=distillguard,envoyGateway.enabled=true")
		if len(manifest.Find(objs, "ReferenceGrant")) != 0 {
			t.Error("ReferenceGrant rendered for a same-namespace backend")
		}
		got := one[*egv1a1.EnvoyExtensionPolicy](t, objs, "EnvoyExtensionPolicy")
		want := read(t, "envoy-gateway-extensionpolicy.yaml").Typed.(*egv1a1.EnvoyExtensionPolicy)
		if !equality.Semantic.DeepEqual(got.Spec, want.Spec) {
			g, _ := yaml.Marshal(got.Spec)
			w, _ := yaml.Marshal(want.Spec)
			t.Errorf("chart EnvoyExtensionPolicy spec differs from envoy/envoy-gateway-extensionpolicy.yaml:\n--- chart\n%s--- file\n%s", g, w)
		}
	})
}

// TestRefusedValues: values that would render a broken or unsafe release
// fail the render with a message saying what to do.
func TestRefusedValues(t *testing.T) {
	for _, tc := range []struct {
		set, want string
	}{
		// values.schema.json
		{"secretDelivery=env", "at '/secretDelivery': value must be one of 'inline', 'files'"},
		{"replicaCont=3", "additional properties 'replicaCont' not allowed"},
		{"redis.addrs[0]=no-port", "/redis/addrs/0"},
		{"istio.context=SIDECAR_OUTBOUND", "/istio/context"},
		// template checks
		{"secrets.existingSecret=mine", "secrets.existingSecret needs secretDelivery=files"},
		{"redis.enabled=true", "redis.enabled needs redis.addrs"},
		{"redis.enabled=true,redis.addrs[0]=r:6379,redis.existingSecret.name=x", "redis.existingSecret needs secretDelivery=files"},
		{"secretDelivery=files,secrets.existingSecret=s,redis.enabled=true,redis.addrs[0]=r:6379,redis.password=p", "set redis.existingSecret"},
		{"config.server.drain_grace=5s", "config.server.drain_grace is set by the chart"},
		{"config.server.admin_addr=127.0.0.1:1", "config.server.admin_addr is set by the chart"},
		{"config.scoring.secret=x", "config.scoring.secret is set by the chart"},
		{"config.admin.token=x", "config.admin.token is set by the chart"},
		{"networkPolicy.enabled=true", "networkPolicy.enabled needs networkPolicy.envoyPeers"},
		{"drain.graceSeconds=-1", "/drain/graceSeconds"},
		{"extraVolumes[0].name=tls,extraVolumes[0].emptyDir=null", `"tls" is a volume of the chart's own`},
		{"extraVolumeMounts[0].name=x", "/extraVolumeMounts/0"},
	} {
		t.Run(tc.set, func(t *testing.T) {
			_, err := helm(t, "template", "dg", chartDir, "--set", tc.set)
			if err == nil {
				t.Fatalf("--set %s rendered", tc.set)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("--set %s: error lacks %q:\n%v", tc.set, tc.want, err)
			}
		})
	}
}

// TestSecretDeliveryInline: with inline delivery the secret values live in
// the config Secret only, and the server accepts the file.
func TestSecretDeliveryInline(t *testing.T) {
	objs := render(t, "distillguard", "--set", "secrets.scoringSecret=s3cr3t-0123456789abcdef0123456789,secrets.adminToken=tok")
	if n := len(manifest.Find(objs, "ConfigMap")); n != 0 {
		t.Errorf("%d ConfigMaps with inline delivery", n)
	}
	d := one[*appsv1.Deployment](t, objs, "Deployment")
	cfg := configFile(t, objs, d)
	if !strings.Contains(cfg, "secret: s3cr3t-0123456789abcdef0123456789") || !strings.Contains(cfg, "token: tok") {
		t.Errorf("inline config lacks the secrets:\n%s", cfg)
	}
	checkConfig(t, cfg)
}

// TestExistingSecret: files delivery from a Secret the chart does not own.
func TestExistingSecret(t *testing.T) {
	objs := render(t, "distillguard", "--set", "secretDelivery=files,secrets.existingSecret=platform-distillguard")
	if n := len(manifest.Find(objs, "Secret")); n != 0 {
		t.Errorf("chart rendered %d Secrets next to an existing one", n)
	}
	d := one[*appsv1.Deployment](t, objs, "Deployment")
	var found bool
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == "platform-distillguard" {
			found = true
		}
	}
	if !found {
		t.Error("existing Secret is not mounted")
	}
	cfg := configFile(t, objs, d)
	if !strings.Contains(cfg, "secret_file: /etc/distillguard/secrets/scoring-secret") || !strings.Contains(cfg, "token_file: /etc/distillguard/secrets/admin-token") {
		t.Errorf("config does not name the mounted files:\n%s", cfg)
	}
	checkConfig(t, cfg)
}

// TestEveryValueIsDocumented keeps values.yaml the chart's reference: every
// .Values path a template reads exists in values.yaml.
func TestEveryValueIsDocumented(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, ref := range valuesRefs(string(src)) {
			seen++
			var cur any = values
			for _, part := range strings.Split(ref, ".") {
				m, ok := cur.(map[string]any)
				if !ok {
					break // below a free-form map (config, labels, ...)
				}
				next, ok := m[part]
				if !ok {
					t.Errorf("%s reads .Values.%s, which values.yaml does not define", filepath.Base(f), ref)
					break
				}
				cur = next
			}
		}
	}
	if seen < 50 {
		t.Fatalf("only %d .Values references found; the scanner is broken", seen)
	}
}

// valuesRefs returns the dotted paths after every ".Values." in src.
func valuesRefs(src string) []string {
	var out []string
	for {
		i := strings.Index(src, ".Values.")
		if i < 0 {
			return out
		}
		src = src[i+len(".Values."):]
		j := 0
		for j < len(src) && (src[j] == '.' || src[j] == '_' || src[j] >= 'a' && src[j] <= 'z' || src[j] >= 'A' && src[j] <= 'Z' || src[j] >= '0' && src[j] <= '9') {
			j++
		}
		out = append(out, strings.TrimSuffix(src[:j], "."))
		src = src[j:]
	}
}
