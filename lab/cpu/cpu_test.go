package cpu

import (
	"runtime"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	r, err := parse("cpu  100 5 50 800 20 3 2 10 7 0\n")
	if err != nil {
		t.Fatal(err)
	}
	later, err := parse("cpu  300 5 150 1000 20 3 2 10 7 0\n")
	if err != nil {
		t.Fatal(err)
	}
	u := r.To(later)
	// busy went from 170 to 470 ticks, idle (idle+iowait) from 820 to 1020.
	if !u.OK || u.Busy != 3*time.Second || u.Share != 0.6 {
		t.Errorf("usage = %+v, want 3s busy, share 0.6", u)
	}
	if got := u.Per(300); got != 10*time.Millisecond {
		t.Errorf("Per(300) = %v, want 10ms", got)
	}
	for _, bad := range []string{"", "cpu0 1 2 3 4 5 6 7 8\n", "cpu 1 2 x 4 5 6 7 8\n", "cpu 1 2 3\n"} {
		if _, err := parse(bad); err == nil {
			t.Errorf("parse(%q) accepted", bad)
		}
	}
	if u := (Reading{}).To(later); u.OK {
		t.Errorf("usage from an unavailable reading: %+v", u)
	}
}

// On Linux, CPU this process burns between two readings shows.
func TestReadSeesWork(t *testing.T) {
	if runtime.GOOS != "linux" {
		if Read().ok {
			t.Fatal("a reading off Linux")
		}
		return
	}
	r := Read()
	if !r.ok {
		t.Fatal("no reading of /proc/stat on Linux")
	}
	x := 0
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		for i := range 1000 {
			x += i
		}
	}
	u := r.Since()
	if !u.OK || u.Busy < 100*time.Millisecond || u.Share <= 0 || u.Share > 1 {
		t.Errorf("after burning 300ms of CPU: %+v (%d)", u, x)
	}
}
