// Command image builds distillguard's container image without a container
// daemon: a static binary in one layer on an empty base, running as the
// distroless nonroot user (65532), written as an OCI image layout that
// registries' tools (crane, skopeo, oras, containerd's import) read, and
// optionally as a tarball for `docker load`.
//
//	go run ./image -root .. -o ../image-out/oci -tarball ../image-out/distillguard.tar
//
// The Dockerfile at the repository root builds the same image with docker.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

func main() {
	o := Options{}
	flag.StringVar(&o.Root, "root", "..", "distillguard module root")
	flag.StringVar(&o.GOARCH, "arch", runtime.GOARCH, "target architecture (linux/<arch>)")
	flag.StringVar(&o.Out, "o", "image-out/oci", "OCI image layout directory to write (replaced)")
	flag.StringVar(&o.Tarball, "tarball", "", "also write a `docker load` tarball here")
	flag.StringVar(&o.Tag, "tag", "distillguard:dev", "image reference recorded in the layout and tarball")
	flag.StringVar(&o.Version, "version", "dev", "org.opencontainers.image.version label")
	flag.StringVar(&o.Revision, "revision", "", "org.opencontainers.image.revision label (git commit)")
	flag.StringVar(&o.CABundle, "ca-bundle", "", `CA bundle copied into the image ("" the host's when present, "-" none)`)
	flag.StringVar(&o.Binary, "binary", "", "use this prebuilt static binary instead of building one")
	flag.Parse()
	// SOURCE_DATE_EPOCH is the reproducible-builds convention for a fixed
	// timestamp (https://reproducible-builds.org/specs/source-date-epoch/).
	o.Created = time.Unix(0, 0).UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "image: SOURCE_DATE_EPOCH %q: %v\n", s, err)
			os.Exit(2)
		}
		o.Created = time.Unix(sec, 0).UTC()
	}
	res, err := Build(o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "image: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("image %s %s -> %s\n", o.Tag, res.Digest, o.Out)
	if o.Tarball != "" {
		fmt.Printf("docker load -i %s\n", o.Tarball)
	}
}
