package gpu

import (
	"context"
	"regexp"
	"testing"
)

func TestFakeInventory(t *testing.T) {
	f := NewFake("gpu-host-01", 8)
	if f.Name() != "fake" {
		t.Fatalf("Name() = %q, want fake", f.Name())
	}
	inv := f.Inventory()
	if len(inv) != 8 {
		t.Fatalf("got %d GPUs, want 8", len(inv))
	}
	uuid := regexp.MustCompile(`^GPU-fake-[0-9a-f]{8}-[0-9]+$`)
	seen := map[string]bool{}
	for i, g := range inv {
		if g.GetIndex() != uint32(i) {
			t.Errorf("gpu %d: index %d", i, g.GetIndex())
		}
		if !uuid.MatchString(g.GetUuid()) {
			t.Errorf("gpu %d: uuid %q does not look like GPU-fake-<8 hex>-<index>", i, g.GetUuid())
		}
		if seen[g.GetUuid()] {
			t.Errorf("gpu %d: uuid %q repeats", i, g.GetUuid())
		}
		seen[g.GetUuid()] = true
		if g.GetName() != "Fake GPU (simulated A100-SXM4-80GB)" || g.GetMemoryTotalMib() != 81920 {
			t.Errorf("gpu %d: %q with %d MiB, want the simulated A100 80GB", i, g.GetName(), g.GetMemoryTotalMib())
		}
	}

	// A restarted agent must report the same GPUs, or the controller would see new hardware.
	again := NewFake("gpu-host-01", 8).Inventory()
	other := NewFake("gpu-host-02", 8).Inventory()
	for i := range inv {
		if again[i].GetUuid() != inv[i].GetUuid() {
			t.Errorf("gpu %d: uuid %q after restart, was %q", i, again[i].GetUuid(), inv[i].GetUuid())
		}
		if other[i].GetUuid() == inv[i].GetUuid() {
			t.Errorf("gpu %d: two nodes share uuid %q", i, inv[i].GetUuid())
		}
	}

	// The inventory is a copy: changing it must not change the backend.
	inv[0].Uuid = "changed"
	if f.Inventory()[0].GetUuid() == "changed" {
		t.Fatal("Inventory returned the backend's own messages")
	}
}

func TestFakeSampleIsIdle(t *testing.T) {
	f := NewFake("n1", 2)
	samples := f.Sample(context.Background())
	if len(samples) != 2 {
		t.Fatalf("got %d samples, want 2", len(samples))
	}
	inv := f.Inventory()
	for i, s := range samples {
		if s.GetIndex() != inv[i].GetIndex() || s.GetUuid() != inv[i].GetUuid() {
			t.Errorf("sample %d is for %d/%q, want %d/%q", i, s.GetIndex(), s.GetUuid(), inv[i].GetIndex(), inv[i].GetUuid())
		}
		if s.UtilizationPercent == nil || s.GetUtilizationPercent() != 0 {
			t.Errorf("sample %d: utilization %v, want 0", i, s.UtilizationPercent)
		}
		if s.MemoryUsedMib == nil || s.GetMemoryUsedMib() != 0 {
			t.Errorf("sample %d: memory used %v, want 0", i, s.MemoryUsedMib)
		}
		if s.GetTemperatureCelsius() != 30 || s.GetPowerWatts() != 60 || s.GetPowerLimitWatts() != 400 {
			t.Errorf("sample %d: %v C, %v W of %v W, want 30 C, 60 W of 400 W", i,
				s.GetTemperatureCelsius(), s.GetPowerWatts(), s.GetPowerLimitWatts())
		}
		if s.Healthy == nil || !s.GetHealthy() {
			t.Errorf("sample %d: healthy %v, want true", i, s.Healthy)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestNone(t *testing.T) {
	n := NewNone()
	if n.Name() != "none" {
		t.Fatalf("Name() = %q, want none", n.Name())
	}
	if len(n.Inventory()) != 0 || len(n.Sample(context.Background())) != 0 {
		t.Fatal("a host without GPUs reported some")
	}
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}
