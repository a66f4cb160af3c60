package main

import (
	"archive/tar"
	"bufio"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/distillguard/distillguard/deploy/internal/testtool"
)

var created = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// TestImage builds the image the way `make image` does, reads the OCI
// layout back, checks the config and the filesystem, and runs the binary
// taken out of the layer with the image's own entrypoint and arguments.
func TestImage(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "oci")
	tb := filepath.Join(dir, "distillguard.tar")
	res, err := Build(Options{
		Root: testtool.Root(t), Out: out, Tarball: tb, Tag: "registry.example/distillguard:1.2.3",
		Version: "1.2.3", Revision: "0123456789abcdef", Created: created,
	})
	if err != nil {
		t.Fatal(err)
	}

	lp, err := layout.FromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("layout holds %d manifests, want 1", len(im.Manifests))
	}
	desc := im.Manifests[0]
	if desc.Digest != res.Digest {
		t.Errorf("layout digest %s, Build reported %s", desc.Digest, res.Digest)
	}
	if desc.MediaType != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s, want OCI", desc.MediaType)
	}
	if got := desc.Annotations["org.opencontainers.image.ref.name"]; got != "1.2.3" {
		t.Errorf("ref.name annotation %q, want 1.2.3", got)
	}
	img, err := idx.Image(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	// validate.Image recomputes every digest and size in the manifest and
	// config from the blobs, as a registry would on push.
	if err := validate.Image(img); err != nil {
		t.Fatalf("image does not validate: %v", err)
	}

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != "65532:65532" {
		t.Errorf("User %q, want 65532:65532", c.User)
	}
	if u := strings.Split(c.User, ":")[0]; u == "" || u == "0" || u == "root" {
		t.Errorf("image runs as root (%q)", c.User)
	}
	if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/distillguard"}) {
		t.Errorf("Entrypoint %q", c.Entrypoint)
	}
	if !slices.Equal(c.Cmd, []string{"-admin-addr", "0.0.0.0:9090"}) {
		t.Errorf("Cmd %q: the admin port must listen on every address in a pod", c.Cmd)
	}
	for _, p := range []string{"50051/tcp", "9090/tcp"} {
		if _, ok := c.ExposedPorts[p]; !ok {
			t.Errorf("port %s not exposed (have %v)", p, c.ExposedPorts)
		}
	}
	wantLabels := map[string]string{
		"org.opencontainers.image.title":    "distillguard",
		"org.opencontainers.image.version":  "1.2.3",
		"org.opencontainers.image.revision": "0123456789abcdef",
		"org.opencontainers.image.created":  "2025-01-02T03:04:05Z",
		"org.opencontainers.image.source":   "https://github.com/distillguard/distillguard",
	}
	for k, v := range wantLabels {
		if c.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
		}
	}
	if cf.OS != "linux" || cf.Architecture == "" {
		t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
	}
	if !cf.Created.Time.Equal(created) {
		t.Errorf("created %v, want %v", cf.Created.Time, created)
	}

	files := layerFiles(t, img)
	bin, ok := files["usr/local/bin/distillguard"]
	if !ok {
		t.Fatalf("binary missing from the layer; entries: %v", keys(files))
	}
	passwd := string(files["etc/passwd"].data)
	if !strings.Contains(passwd, "\nnonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd lacks the nonroot user:\n%s", passwd)
	}
	if _, err := os.Stat(caBundle); err == nil {
		if _, ok := files[strings.TrimPrefix(caBundle, "/")]; !ok {
			t.Errorf("host has %s but the image does not", caBundle)
		}
	}
	for n, f := range files {
		// Owned by root and not writable by anyone else: the process, as
		// 65532, cannot change the image (readOnlyRootFilesystem is free).
		if f.hdr.Uid != 0 || f.hdr.Gid != 0 {
			t.Errorf("%s owned by %d:%d", n, f.hdr.Uid, f.hdr.Gid)
		}
		if f.hdr.Mode&0o022 != 0 {
			t.Errorf("%s mode %o is group/other writable", n, f.hdr.Mode)
		}
		if !f.hdr.ModTime.Equal(created) {
			t.Errorf("%s mtime %v, want the build time %v", n, f.hdr.ModTime, created)
		}
	}

	binPath := filepath.Join(dir, "extracted-distillguard")
	if err := os.WriteFile(binPath, bin.data, 0o755); err != nil {
		t.Fatal(err)
	}
	assertStatic(t, binPath)

	// The image's entrypoint and arguments, with the binary taken from the
	// layer: -check-config first, then a server on free local ports.
	argv := append(slices.Clone(c.Cmd), "-check-config")
	outb, err := exec.Command(binPath, argv...).CombinedOutput()
	if err != nil || !strings.Contains(string(outb), "config ok") {
		t.Fatalf("%s %q: %v\n%s", c.Entrypoint[0], argv, err, outb)
	}
	// A later flag wins in Go's flag package: the test moves the image's
	// admin address to a free loopback port.
	srv := testtool.Start(t, binPath, append(slices.Clone(c.Cmd), "-grpc-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0")...)
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body := srv.Get(t, p); code != 200 {
			t.Errorf("GET %s = %d %q", p, code, body)
		}
	}
	if code, body := srv.Get(t, "/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Errorf("GET /metrics = %d, no go_goroutines", code)
	}
	srv.Stop(t)

	// The tarball is the same image, in the form `docker load` reads
	// (manifest.json with RepoTags).
	tag, err := name.NewTag("registry.example/distillguard:1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	timg, err := tarball.ImageFromPath(tb, &tag)
	if err != nil {
		t.Fatal(err)
	}
	// docker's tarball format carries a Docker-schema manifest, so compare
	// what the manifest points at: the config and the layer contents.
	wantCfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := timg.ConfigName(); err != nil || got != wantCfg {
		t.Errorf("tarball config %v (%v), layout config %s", got, err, wantCfg)
	}
	tl, err := timg.Layers()
	if err != nil || len(tl) != 1 {
		t.Fatalf("tarball layers %d (%v)", len(tl), err)
	}
	ll, _ := img.Layers()
	gotDiff, _ := tl[0].DiffID()
	wantDiff, _ := ll[0].DiffID()
	if gotDiff != wantDiff {
		t.Errorf("tarball layer %s, layout layer %s", gotDiff, wantDiff)
	}
	m, err := tarball.ComputeManifest(map[name.Reference]v1.Image{tag: timg})
	if err != nil || len(m) != 1 || !slices.Contains(m[0].RepoTags, "registry.example/distillguard:1.2.3") {
		t.Errorf("docker manifest %+v (%v)", m, err)
	}

	// Same inputs, same image: the layer and config depend on the binary
	// bytes and the build time only.
	again, err := Build(Options{Out: filepath.Join(dir, "oci2"), Binary: binPath, Tag: "registry.example/distillguard:1.2.3",
		Version: "1.2.3", Revision: "0123456789abcdef", Created: created})
	if err != nil {
		t.Fatal(err)
	}
	if again.Digest != res.Digest {
		t.Errorf("rebuild from the same binary gave %s, first build %s", again.Digest, res.Digest)
	}
}

type entry struct {
	hdr  *tar.Header
	data []byte
}

func layerFiles(t *testing.T, img v1.Image) map[string]entry {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
		t.Errorf("layer media type %s, want %s", mt, types.OCILayer)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]entry{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(h.Name, "/")] = entry{h, b}
	}
	return out
}

func keys(m map[string]entry) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	slices.Sort(k)
	return k
}

// assertStatic fails unless path is an ELF executable without an
// interpreter (PT_INTERP): the image has no dynamic loader and no libc.
func assertStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("binary is dynamically linked (has PT_INTERP)")
		}
	}
}

// TestDockerfileMatchesBuilder keeps the Dockerfile (for docker builds) and
// the daemonless builder producing the same image shape.
func TestDockerfileMatchesBuilder(t *testing.T) {
	f, err := os.Open(filepath.Join(testtool.Root(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages []string
	inst := map[string][]string{} // instruction -> arguments, final stage
	sc := bufio.NewScanner(f)
	var cont strings.Builder
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cont.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		line = cont.String() + line
		cont.Reset()
		word, rest, _ := strings.Cut(line, " ")
		word = strings.ToUpper(word)
		if word == "FROM" {
			stages = append(stages, rest)
			inst = map[string][]string{"RUN": inst["RUN"]}
			continue
		}
		inst[word] = append(inst[word], rest)
	}
	if len(stages) != 2 {
		t.Fatalf("want a build stage and a final stage, got %q", stages)
	}
	if !strings.Contains(stages[0], "golang:") {
		t.Errorf("build stage %q is not a golang image", stages[0])
	}
	if !strings.HasPrefix(stages[1], "gcr.io/distroless/static") || !strings.HasSuffix(stages[1], ":nonroot") {
		t.Errorf("final stage %q is not distroless static nonroot", stages[1])
	}
	build := strings.Join(inst["RUN"], "\n")
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/distillguard"} {
		if !strings.Contains(build, want) {
			t.Errorf("build stage RUN lacks %s", want)
		}
	}
	jsonArgs := func(kw string) []string {
		v := inst[kw]
		if len(v) != 1 {
			t.Fatalf("%s appears %d times in the final stage", kw, len(v))
		}
		var a []string
		if err := json.Unmarshal([]byte(v[0]), &a); err != nil {
			t.Fatalf("%s %s: not exec form: %v", kw, v[0], err)
		}
		return a
	}
	if got := jsonArgs("ENTRYPOINT"); !slices.Equal(got, Entrypoint()) {
		t.Errorf("Dockerfile ENTRYPOINT %q, builder %q", got, Entrypoint())
	}
	if got := jsonArgs("CMD"); !slices.Equal(got, Cmd()) {
		t.Errorf("Dockerfile CMD %q, builder %q", got, Cmd())
	}
	if got := inst["USER"]; len(got) != 1 || got[0] != "65532:65532" {
		t.Errorf("Dockerfile USER %q", got)
	}
	if got := inst["EXPOSE"]; len(got) != 1 || got[0] != "50051 9090" {
		t.Errorf("Dockerfile EXPOSE %q", got)
	}
	if got := inst["COPY"]; len(got) != 1 || !strings.HasSuffix(got[0], " "+BinaryPath) {
		t.Errorf("Dockerfile final COPY %q does not install %s", got, BinaryPath)
	}
}
