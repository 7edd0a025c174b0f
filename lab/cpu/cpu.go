// Package cpu tells the benches how busy the whole machine was while they
// measured: the CPU time every process (the services, the database
// server, the broker) spent between two readings of /proc/stat. It works
// on Linux; elsewhere readings are marked unavailable.
package cpu

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// tick is the unit of /proc/stat: USER_HZ, 100 a second on Linux
// whatever the kernel's own tick.
const tick = 10 * time.Millisecond

// Reading is the machine's CPU counters at one moment.
type Reading struct {
	busy, total uint64 // in ticks, summed over all cores
	ok          bool
}

// Read takes a reading; it is not OK where /proc/stat cannot be read.
func Read() Reading {
	r, err := read("/proc/stat")
	if err != nil {
		return Reading{}
	}
	return r
}

func read(path string) (Reading, error) {
	f, err := os.Open(path)
	if err != nil {
		return Reading{}, err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil {
		return Reading{}, err
	}
	return parse(line)
}

// parse reads the aggregate "cpu" line: user nice system idle iowait irq
// softirq steal (guest time is counted in user already).
func parse(line string) (Reading, error) {
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return Reading{}, fmt.Errorf("cpu: not an aggregate cpu line: %q", line)
	}
	var v [8]uint64
	for i := range v {
		n, err := strconv.ParseUint(fields[i+1], 10, 64)
		if err != nil {
			return Reading{}, fmt.Errorf("cpu: field %d of %q: %w", i+1, line, err)
		}
		v[i] = n
	}
	idle := v[3] + v[4]
	busy := v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
	return Reading{busy: busy, total: busy + idle, ok: true}, nil
}

// Usage is the machine's CPU use between two readings.
type Usage struct {
	Busy  time.Duration // CPU time spent, all cores together
	Share float64       // of the cores' time, 0 to 1
	OK    bool          // false where the machine could not be read
}

// Since returns the machine's use from r to now.
func (r Reading) Since() Usage { return r.To(Read()) }

// To returns the machine's use from r to later.
func (r Reading) To(later Reading) Usage {
	if !r.ok || !later.ok || later.total <= r.total {
		return Usage{}
	}
	busy := later.busy - r.busy
	return Usage{Busy: time.Duration(busy) * tick, Share: float64(busy) / float64(later.total-r.total), OK: true}
}

// Per is the CPU time spent per operation, for n operations.
func (u Usage) Per(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	return u.Busy / time.Duration(n)
}
