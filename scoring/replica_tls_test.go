package scoring

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/distillguard/distillguard/internal/redisproc"
)

// writeCA writes a CA and a server certificate for 127.0.0.1 into dir.
func writeCA(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "redis"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames: []string{"redis.test"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caTmpl, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", srvDER), write("server.key", "EC PRIVATE KEY", keyDER)
}

// TestReplicaTLSAndACL: a redis-server speaking TLS, with an ACL user; the
// engine verifies the server against ca_file and authenticates with a
// password read from a file. Without the CA it cannot connect, and scores
// on local state.
func TestReplicaTLSAndACL(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := writeCA(t, dir)
	tlsPort, err := redisproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	srv := redisproc.Require(t, redisproc.Options{Args: []string{
		"--tls-port", strconv.Itoa(tlsPort), "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca,
		"--tls-auth-clients", "no", "--user", "dg", "on", ">s3cret-pw", "~*", "&*", "+@all",
	}})
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte("s3cret-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort))
	e := newTestEngine(t, func(c *Config) {
		c.Redis.Addrs = []string{addr}
		c.Redis.KeyPrefix = "tls:"
		c.Redis.Username, c.Redis.PasswordFile = "dg", pw
		c.Redis.TLS = RedisTLS{Enabled: true, CAFile: ca, ServerName: "redis.test"}
	})
	d := e.Score(newClient("sk-tls", "198.51.100.90:1").req(t0, "hello over TLS"))
	if err := e.Flush(); err != nil {
		t.Fatalf("flush over TLS: %v", err)
	}
	if out, err := srv.CLI("--raw", "EXISTS", "tls:{"+d.Session+"}:s"); err != nil || strings.TrimSpace(out) != "1" {
		t.Fatalf("session not written over TLS: %q %v", out, err)
	}
	// Same server, no CA: verification fails; the engine still scores.
	untrusted := newTestEngine(t, func(c *Config) {
		c.Redis.Addrs = []string{addr}
		c.Redis.Username, c.Redis.Password = "dg", "s3cret-pw"
		c.Redis.TLS = RedisTLS{Enabled: true, ServerName: "redis.test"}
		c.Redis.DialTimeout = 200 * time.Millisecond
	})
	if d := untrusted.Score(newClient("sk-tls", "198.51.100.90:1").req(t0, "hello")); d.Session == "" {
		t.Fatal("no decision without Redis")
	}
	if err := untrusted.Flush(); err == nil {
		t.Error("flush succeeded against a server whose certificate was not verified")
	}
}
