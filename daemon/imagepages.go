package daemon

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// dropImagePages takes the pages of the daemon's own read-only data (type
// data, the function tables: 2 MiB of the 4 MiB binary) out of its
// resident set, as dropIndexPages does for the indexes, and returns how
// many KiB it dropped. Work maps nearly all of it (the kernel's
// fault-around maps 64 KiB around each page touched); the next event
// faults back 0.2-0.3 MiB. The code is left alone: an event's handling
// faults back 1.2-1.3 MiB of its 1.8, which cost 2 ms of a hotplug's
// reaction under TCG (5.3-7.4 ms against 4.3-4.4, one bench round each).
// The pages stay in the page cache (in an initramfs, in memory either
// way): what this lowers is the resident set charged to the daemon (ps,
// top, the OOM killer's score), not the memory in use, which is the
// anonymous part.
//
// Only read-only mappings of the executable holding no private copy of a
// page (smaps' Anonymous: 0) are dropped: madvise(MADV_DONTNEED) would
// throw a private copy away (a relocated read-only segment of a PIE
// build), and the writable data segment is all private copies.
func dropImagePages() (int64, error) {
	var self unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &self); err != nil {
		return 0, err
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var (
		dropped   int64
		cur       imageMapping
		haveCur   bool
		firstFail error
	)
	flush := func() {
		if !haveCur || !cur.droppable() {
			return
		}
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, cur.start, cur.end-cur.start, unix.MADV_DONTNEED); e != 0 {
			if firstFail == nil {
				firstFail = fmt.Errorf("madvise %#x-%#x: %w", cur.start, cur.end, e)
			}
			return
		}
		dropped += cur.rssKiB
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Bytes()
		if m, ok := parseMappingLine(line); ok {
			flush()
			cur, haveCur = m, m.isFile(&self)
			continue
		}
		if !haveCur {
			continue
		}
		key, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		switch string(key) {
		case "Rss":
			cur.rssKiB = kiB(rest)
		case "Anonymous":
			cur.anonKiB = kiB(rest)
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return dropped, fmt.Errorf("/proc/self/smaps: %w", err)
	}
	return dropped, firstFail
}

// imageMapping is one mapping of /proc/self/smaps, as far as
// dropImagePages needs it.
type imageMapping struct {
	start, end   uintptr
	perms        string
	major, minor uint32
	inode        uint64
	// -1 until smaps says: a mapping whose counts are missing is kept.
	rssKiB, anonKiB int64
}

func (m *imageMapping) isFile(st *unix.Stat_t) bool {
	return m.inode == st.Ino && m.major == unix.Major(st.Dev) && m.minor == unix.Minor(st.Dev)
}

func (m *imageMapping) droppable() bool {
	return m.perms == "r--p" && m.rssKiB > 0 && m.anonKiB == 0
}

// parseMappingLine reads a mapping's header line of /proc/PID/smaps:
// "start-end perms offset major:minor inode [path]".
func parseMappingLine(line []byte) (imageMapping, bool) {
	f := bytes.Fields(line)
	if len(f) < 5 {
		return imageMapping{}, false
	}
	addr, dev := bytes.Split(f[0], []byte("-")), bytes.Split(f[3], []byte(":"))
	if len(addr) != 2 || len(dev) != 2 || len(f[1]) != 4 {
		return imageMapping{}, false
	}
	start, err1 := strconv.ParseUint(string(addr[0]), 16, 64)
	end, err2 := strconv.ParseUint(string(addr[1]), 16, 64)
	major, err3 := strconv.ParseUint(string(dev[0]), 16, 32)
	minor, err4 := strconv.ParseUint(string(dev[1]), 16, 32)
	inode, err5 := strconv.ParseUint(string(f[4]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || err5 != nil || end <= start {
		return imageMapping{}, false
	}
	return imageMapping{
		start: uintptr(start), end: uintptr(end), perms: string(f[1]),
		major: uint32(major), minor: uint32(minor), inode: inode,
		rssKiB: -1, anonKiB: -1,
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
