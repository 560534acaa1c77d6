package fleetbench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// startProfiles fetches the leader's CPU profile over the steady window (at most 10 s) and
// its heap and mutex profiles after it, into cfg.PprofDir. The returned func waits for them
// and lists the files written; failures become notes, since profiles are an extra.
func (b *Bench) startProfiles(ctx context.Context, leader *controllerProc) func() []ProfileFile {
	if !b.cfg.Pprof || leader.pprofAddr == "" {
		return func() []ProfileFile { return nil }
	}
	if err := os.MkdirAll(b.cfg.PprofDir, 0o755); err != nil {
		b.note("--pprof-dir %s: %v", b.cfg.PprofDir, err)
		return func() []ProfileFile { return nil }
	}
	secs := int(min(10*time.Second, b.cfg.Duration).Seconds())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var out []ProfileFile
	var notes []string
	fetch := func(kind, path string) {
		file := filepath.Join(b.cfg.PprofDir, fmt.Sprintf("controller-%s.pprof", kind))
		if err := download(ctx, "http://"+leader.pprofAddr+path, file, time.Duration(secs+30)*time.Second); err != nil {
			mu.Lock()
			notes = append(notes, fmt.Sprintf("pprof %s: %v", kind, err))
			mu.Unlock()
			return
		}
		mu.Lock()
		out = append(out, ProfileFile{Kind: kind, Path: file, Command: fmt.Sprintf("go tool pprof -top %s %s", b.cfg.Controller, file)})
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		fetch("cpu", fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs))
		// Heap and mutex after the CPU profile, so that their own cost is not in it.
		fetch("heap", "/debug/pprof/heap")
		fetch("mutex", "/debug/pprof/mutex")
	}()
	return func() []ProfileFile {
		wg.Wait()
		for _, n := range notes {
			b.note("%s", n)
		}
		return out
	}
}

func download(ctx context.Context, url, file string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
