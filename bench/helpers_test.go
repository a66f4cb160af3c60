package bench

import (
	"context"
	"net"
	"testing"

	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/server"
)

// serveInProcess serves p on a loopback port for the test's lifetime,
// through the same server assembly as the suite's children.
func serveInProcess(t testing.TB, p extprocv3.ExternalProcessorServer) string {
	t.Helper()
	return serveConfig(t, config.Default(), p)
}

// serveConfig serves cfg on loopback ports for the test's lifetime: p, or
// distillguard itself when p is nil.
func serveConfig(t testing.TB, cfg *config.Config, p extprocv3.ExternalProcessorServer) string {
	t.Helper()
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		gl.Close()
		t.Fatal(err)
	}
	srv, err := server.New(cfg, server.Options{Processor: p, GRPCListener: gl, AdminListener: al})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.GRPCAddr()
}

// processorClient serves p in process and returns a client of it, closed
// with the test.
func processorClient(t testing.TB, p extprocv3.ExternalProcessorServer) extprocv3.ExternalProcessorClient {
	t.Helper()
	cc, err := grpc.NewClient(serveInProcess(t, p), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return extprocv3.NewExternalProcessorClient(cc)
}

// openStream opens an ext_proc stream on client and exchanges its first
// message, request headers carrying protocol_config (which travels on the
// first message only) with a buffered request body and the response body
// mode respMode.
func openStream(t testing.TB, ctx context.Context, client extprocv3.ExternalProcessorClient, respMode procmodev3.ProcessingMode_BodySendMode) extprocv3.ExternalProcessor_ProcessClient {
	t.Helper()
	st, err := client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := &extprocv3.ProcessingRequest{
		Request:        &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{}},
		ProtocolConfig: &extprocv3.ProtocolConfiguration{RequestBodyMode: procmodev3.ProcessingMode_BUFFERED, ResponseBodyMode: respMode},
	}
	if err := st.Send(first); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	return st
}
