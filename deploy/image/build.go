package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's fixed shape. The Dockerfile at the repository root builds the
// same shape with docker; image_test.go checks the two agree.
const (
	// BinaryPath is where the server binary lives in the image.
	BinaryPath = "/usr/local/bin/distillguard"
	// NonrootUID is distroless's "nonroot" user and group
	// (https://github.com/GoogleContainerTools/distroless, base/nonroot).
	NonrootUID = 65532
	// GRPCPort and AdminPort are the ports the server listens on in the
	// image: the admin port is bound to every address (the binary's own
	// default is 127.0.0.1:9090) so the kubelet's HTTP probes reach it.
	GRPCPort  = 50051
	AdminPort = 9090
	// caBundle is the Debian path of the system CA bundle, copied into the
	// image when the build machine has one (outbound TLS, e.g. to Redis).
	caBundle = "/etc/ssl/certs/ca-certificates.crt"
)

// Entrypoint and Cmd of the image config. Cmd is the default argument list:
// a Kubernetes container's args replace it.
func Entrypoint() []string { return []string{BinaryPath} }
func Cmd() []string        { return []string{"-admin-addr", "0.0.0.0:" + strconv.Itoa(AdminPort)} }

// Options say what to build and where to write it.
type Options struct {
	Root     string    // the distillguard module root (holds go.mod and cmd/distillguard)
	GOARCH   string    // target architecture; the image is always linux
	Out      string    // OCI image layout directory (created or replaced)
	Tarball  string    // optional: a `docker load` tarball as well
	Tag      string    // reference written into the layout and the tarball
	Version  string    // org.opencontainers.image.version
	Revision string    // org.opencontainers.image.revision (git commit)
	Created  time.Time // image creation time, also every file's mtime (reproducible builds)
	CABundle string    // CA bundle to copy to /etc/ssl/certs; "" uses the host's when present, "-" none
	Binary   string    // optional: a prebuilt static binary instead of building one
}

// Result describes what Build wrote.
type Result struct {
	Digest v1.Hash // manifest digest
	Image  v1.Image
}

// Build compiles the static server binary, wraps it in a one-layer image
// running as nonroot, and writes an OCI layout (and optionally a tarball).
func Build(o Options) (*Result, error) {
	if o.GOARCH == "" {
		o.GOARCH = "amd64"
	}
	if o.Tag == "" {
		o.Tag = "distillguard:dev"
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	tag, err := name.NewTag(o.Tag)
	if err != nil {
		return nil, fmt.Errorf("tag %q: %w", o.Tag, err)
	}
	bin := o.Binary
	if bin == "" {
		dir, err := os.MkdirTemp("", "distillguard-image-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		bin = filepath.Join(dir, "distillguard")
		if err := compile(o.Root, o.GOARCH, bin); err != nil {
			return nil, err
		}
	}
	binBytes, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	ca := o.CABundle
	switch ca {
	case "":
		if _, err := os.Stat(caBundle); err == nil {
			ca = caBundle
		}
	case "-":
		ca = ""
	}
	var caBytes []byte
	if ca != "" {
		if caBytes, err = os.ReadFile(ca); err != nil {
			return nil, fmt.Errorf("CA bundle: %w", err)
		}
	}
	layerTar, err := rootfs(binBytes, caBytes, o.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, err
	}

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		History:   v1.History{Created: v1.Time{Time: o.Created}, CreatedBy: "distillguard deploy/image", Comment: "static distillguard binary, nonroot passwd, CA bundle"},
		MediaType: types.OCILayer,
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = o.GOARCH
	cf.Created = v1.Time{Time: o.Created}
	uid := strconv.Itoa(NonrootUID)
	cf.Config = v1.Config{
		User:       uid + ":" + uid,
		Entrypoint: Entrypoint(),
		Cmd:        Cmd(),
		WorkingDir: "/",
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=" + caBundle},
		ExposedPorts: map[string]struct{}{
			strconv.Itoa(GRPCPort) + "/tcp":  {},
			strconv.Itoa(AdminPort) + "/tcp": {},
		},
		Labels: labels(o),
		// SIGTERM drains (README, Configuration); it is the runtime's
		// default but said here so no runtime picks another.
		StopSignal: "SIGTERM",
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, err
	}

	if err := os.RemoveAll(o.Out); err != nil {
		return nil, err
	}
	lp, err := layout.Write(o.Out, empty.Index)
	if err != nil {
		return nil, err
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{
		// The OCI image-layout spec's way to name a manifest in index.json.
		"org.opencontainers.image.ref.name": tag.TagStr(),
		"io.containerd.image.name":          tag.String(),
	})); err != nil {
		return nil, err
	}
	if o.Tarball != "" {
		if err := tarball.WriteToFile(o.Tarball, tag, img); err != nil {
			return nil, err
		}
	}
	return &Result{Digest: digest, Image: img}, nil
}

// compile builds cmd/distillguard as a static linux binary: no cgo (the
// image has no libc), -trimpath and an empty build id so the bytes depend on
// the source only, and the vtprotobuf tag for the generated marshallers the
// ext_proc codec uses.
func compile(root, goarch, out string) error {
	if root == "" {
		return errors.New("no module root given")
	}
	cmd := exec.Command("go", "build", "-tags=vtprotobuf", "-trimpath", "-ldflags=-s -w -buildid=", "-o", out, "./cmd/distillguard")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch, "GOFLAGS=-buildvcs=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/distillguard: %w\n%s", err, b)
	}
	return nil
}

func labels(o Options) map[string]string {
	l := map[string]string{
		// https://github.com/opencontainers/image-spec/blob/main/annotations.md
		"org.opencontainers.image.title":       "distillguard",
		"org.opencontainers.image.description": "Envoy ext_proc server defending inference APIs against model extraction",
		"org.opencontainers.image.source":      "https://github.com/distillguard/distillguard",
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.created":     o.Created.UTC().Format(time.RFC3339),
	}
	if o.Revision != "" {
		l["org.opencontainers.image.revision"] = o.Revision
	}
	return l
}

// rootfs is the image's only layer: the binary, an /etc/passwd and
// /etc/group naming the nonroot user (so tools that resolve the user, and
// runAsNonRoot checks by name, work), and the CA bundle. Every entry is owned
// by root and read-only: the process, running as 65532, can write nothing in
// the image, which is why readOnlyRootFilesystem costs it nothing.
func rootfs(bin, ca []byte, mtime time.Time) ([]byte, error) {
	uid := strconv.Itoa(NonrootUID)
	files := map[string]struct {
		mode int64
		data []byte
	}{
		BinaryPath:    {0o555, bin},
		"/etc/passwd": {0o444, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:" + uid + ":" + uid + ":nonroot:/home/nonroot:/sbin/nologin\n")},
		"/etc/group":  {0o444, []byte("root:x:0:\nnonroot:x:" + uid + ":\n")},
	}
	if ca != nil {
		files[caBundle] = struct {
			mode int64
			data []byte
		}{0o444, ca}
	}
	dirs := map[string]bool{}
	for p := range files {
		for d := filepath.Dir(p); d != "/"; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	var names []string
	for d := range dirs {
		names = append(names, d+"/")
	}
	for p := range files {
		names = append(names, p)
	}
	// Sorted entries: the layer digest is a function of the inputs only,
	// and every directory precedes what it holds.
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		h := &tar.Header{Name: n[1:], ModTime: mtime, Uid: 0, Gid: 0, Uname: "root", Gname: "root", Format: tar.FormatPAX}
		if n[len(n)-1] == '/' {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
			if err := tw.WriteHeader(h); err != nil {
				return nil, err
			}
			continue
		}
		f := files[n]
		h.Typeflag, h.Mode, h.Size = tar.TypeReg, f.mode, int64(len(f.data))
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
