package daemon

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"

	"golang.org/x/sys/unix"
)

// dropImagePages drops the pages of the daemon's own read-only data (type
// data, the function tables: 2 MiB of the 4 MiB binary) from its resident
// set, as dropIndexPages does for the indexes, and returns how many KiB it
// dropped. Work maps nearly all of it (the kernel's fault-around maps 64
// KiB around each page touched); the next event faults back 0.2-0.3 MiB.
// The code is left alone: an event's handling faults back 1.2-1.3 MiB of
// its 1.8, which cost 2 ms of a hotplug's reaction under TCG (5.3-7.4 ms
// against 4.3-4.4, one bench round each). The pages stay in the page
// cache (in an initramfs, in memory either way): what this lowers is the
// resident set charged to the daemon (ps, top, the OOM killer's score),
// not the memory in use, which is the anonymous part.
//
// The executable is the file mapped where this function's code is (its
// device and inode as the mapping says: stat may say otherwise on
// overlayfs or btrfs). Only its read-only, private mappings holding no
// private copy of a page, in memory or swapped out, are dropped:
// madvise(MADV_DONTNEED) would throw a private copy away (the relocated
// read-only segment of a PIE build), and the writable data segment is
// all private copies.
func dropImagePages() (int64, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	maps, err := readMappings(f)
	f.Close()
	if err != nil {
		return 0, fmt.Errorf("/proc/self/smaps: %w", err)
	}
	self, ok := mappingAt(maps, uint64(reflect.ValueOf(dropImagePages).Pointer()))
	if !ok {
		return 0, errors.New("/proc/self/smaps: no mapping holds the daemon's code")
	}
	var dropped int64
	for _, m := range maps {
		if !m.sameFile(self) || !m.droppable() {
			continue
		}
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, uintptr(m.start), uintptr(m.end-m.start), unix.MADV_DONTNEED); e != 0 {
			return dropped, fmt.Errorf("madvise %#x-%#x: %w", m.start, m.end, e)
		}
		dropped += m.rssKiB
	}
	return dropped, nil
}

// mapping is one mapping of /proc/PID/smaps, as far as dropImagePages
// needs it.
type mapping struct {
	start, end   uint64
	perms        string
	major, minor uint32
	inode        uint64
	// In KiB; -1 where smaps gave none, which keeps the mapping.
	rssKiB, anonKiB, swapKiB int64
}

func (m *mapping) sameFile(o mapping) bool {
	return m.inode != 0 && m.inode == o.inode && m.major == o.major && m.minor == o.minor
}

func (m *mapping) droppable() bool {
	return m.perms == "r--p" && m.rssKiB > 0 && m.anonKiB == 0 && m.swapKiB == 0
}

func mappingAt(maps []mapping, addr uint64) (mapping, bool) {
	for _, m := range maps {
		if m.start <= addr && addr < m.end {
			return m, true
		}
	}
	return mapping{}, false
}

// readMappings reads the mappings of a /proc/PID/smaps file with their
// Rss, Anonymous and Swap counts.
func readMappings(r io.Reader) ([]mapping, error) {
	var maps []mapping
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Bytes()
		if m, ok := parseMappingLine(line); ok {
			maps = append(maps, m)
			continue
		}
		key, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(maps) == 0 {
			continue
		}
		m := &maps[len(maps)-1]
		switch string(key) {
		case "Rss":
			m.rssKiB = kiB(rest)
		case "Anonymous":
			m.anonKiB = kiB(rest)
		case "Swap":
			m.swapKiB = kiB(rest)
		}
	}
	return maps, sc.Err()
}

// parseMappingLine reads a mapping's header line of /proc/PID/smaps:
// "start-end perms offset major:minor inode [path]".
func parseMappingLine(line []byte) (mapping, bool) {
	f := bytes.Fields(line)
	if len(f) < 5 {
		return mapping{}, false
	}
	addr, dev := bytes.Split(f[0], []byte("-")), bytes.Split(f[3], []byte(":"))
	if len(addr) != 2 || len(dev) != 2 || len(f[1]) != 4 {
		return mapping{}, false
	}
	start, err1 := strconv.ParseUint(string(addr[0]), 16, 64)
	end, err2 := strconv.ParseUint(string(addr[1]), 16, 64)
	major, err3 := strconv.ParseUint(string(dev[0]), 16, 32)
	minor, err4 := strconv.ParseUint(string(dev[1]), 16, 32)
	inode, err5 := strconv.ParseUint(string(f[4]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || err5 != nil || end <= start {
		return mapping{}, false
	}
	return mapping{
		start: start, end: end, perms: string(f[1]),
		major: uint32(major), minor: uint32(minor), inode: inode,
		rssKiB: -1, anonKiB: -1, swapKiB: -1,
	}, true
}

func kiB(rest []byte) int64 {
	f := bytes.Fields(rest)
	if len(f) == 0 {
		return -1
	}
	n, err := strconv.ParseInt(string(f[0]), 10, 64)
	if err != nil {
		return -1
	}
	return n
}
