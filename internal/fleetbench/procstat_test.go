package fleetbench

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseStatCountsFieldsFromTheLastParenthesis(t *testing.T) {
	// A command name with a space and a ')' in it, as a process may give itself.
	stat := "4242 (llm scaler) x) S 1 4242 4242 0 -1 4194560 1234 0 5 0 731 269 0 0 20 0 12 0 1000 1048576 2560 18446744073709551615\n"
	got, err := ParseStat(stat)
	if err != nil {
		t.Fatal(err)
	}
	if got != 731+269 {
		t.Errorf("ParseStat = %d, want utime+stime = 1000", got)
	}
	for _, bad := range []string{"", "4242 no parenthesis S 1 2 3", "1 (x) S 1 2"} {
		if _, err := ParseStat(bad); err == nil {
			t.Errorf("ParseStat(%q) should fail", bad)
		}
	}
}

func TestParseStatusReadsRSSAndPeak(t *testing.T) {
	status := "Name:\tllmscaler-contr\nVmPeak:\t 2000000 kB\nVmHWM:\t  900000 kB\nVmRSS:\t  812345 kB\nThreads:\t12\n"
	rss, hwm, err := ParseStatus(status)
	if err != nil {
		t.Fatal(err)
	}
	if rss != 812345 || hwm != 900000 {
		t.Errorf("ParseStatus = %d, %d; want 812345, 900000", rss, hwm)
	}
	if _, _, err := ParseStatus("Name:\tkthreadd\nState:\tS\n"); err == nil {
		t.Error("a status without VmRSS should fail")
	}
	if _, _, err := ParseStatus("VmRSS:\t12 MB\n"); err == nil {
		t.Error("a unit other than kB should fail")
	}
}

func TestCPUCores(t *testing.T) {
	at := time.Unix(1000, 0)
	a := ProcSample{At: at, CPUTicks: 1000}
	b := ProcSample{At: at.Add(10 * time.Second), CPUTicks: 2500}
	if got := CPUCores(a, b, 100); got != 1.5 {
		t.Errorf("CPUCores = %v, want 1.5 (1500 ticks at 100/s over 10 s)", got)
	}
	if got := CPUCores(b, a, 100); got != 0 {
		t.Errorf("CPUCores backwards = %v, want 0", got)
	}
}

func TestReadProcOfThisProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	p, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if p.RSSKiB == 0 || p.HWMKiB < p.RSSKiB {
		t.Errorf("RSS %d KiB, peak %d KiB: want a resident process whose peak is at least its RSS", p.RSSKiB, p.HWMKiB)
	}
	if _, err := ReadProc(1 << 30); err == nil || !strings.Contains(fmt.Sprint(err), "/proc") {
		t.Errorf("ReadProc of a pid that does not exist: %v", err)
	}
}
