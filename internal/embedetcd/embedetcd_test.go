package embedetcd

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestStartServesAndKeepsData(t *testing.T) {
	dir := t.TempDir()
	start := func() *Server {
		s, err := Start(Config{Dir: dir, ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	use := func(s *Server, f func(*clientv3.Client, context.Context)) {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint()}, DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		f(cli, ctx)
	}
	s := start()
	use(s, func(cli *clientv3.Client, ctx context.Context) {
		if _, err := cli.Put(ctx, "k", "v"); err != nil {
			t.Fatal(err)
		}
	})
	s.Close()
	s = start()
	defer s.Close()
	use(s, func(cli *clientv3.Client, ctx context.Context) {
		resp, err := cli.Get(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
			t.Fatalf("after restart got %v, want k=v", resp.Kvs)
		}
	})
}

func TestStartRefusesBadAddress(t *testing.T) {
	if _, err := Start(Config{Dir: t.TempDir(), ClientAddr: ":2379", PeerAddr: "127.0.0.1:0"}); err == nil {
		t.Fatal("an address without host was accepted")
	}
}
