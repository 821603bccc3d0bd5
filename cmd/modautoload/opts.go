package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// errHelp is returned by optSet.parse for -h and --help.
var errHelp = errors.New("help requested")

// optSet parses options the way getopt_long does, which modprobe's users
// and the kernel's request_module rely on: short options may be grouped
// (-qv) and take their value attached or as the next word (-dDIR, -d DIR),
// long options take "=VALUE" or the next word, options may follow
// positional arguments, and "--" ends the options.
type optSet struct {
	opts []*opt
}

type opt struct {
	short   byte   // 0 if none
	long    string // "" if none
	value   string // value placeholder for help; "" for a switch
	help    string
	set     func(string) error
	isValue bool
}

func (s *optSet) add(o *opt) { s.opts = append(s.opts, o) }

func (s *optSet) boolVar(p *bool, short byte, long, help string) {
	s.add(&opt{short: short, long: long, help: help, set: func(string) error { *p = true; return nil }})
}

func (s *optSet) stringVar(p *string, short byte, long, value, help string) {
	s.add(&opt{short: short, long: long, value: value, help: help, isValue: true,
		set: func(v string) error { *p = v; return nil }})
}

// stringsVar collects every occurrence, as modprobe -C does.
func (s *optSet) stringsVar(p *[]string, short byte, long, value, help string) {
	s.add(&opt{short: short, long: long, value: value, help: help, isValue: true,
		set: func(v string) error { *p = append(*p, v); return nil }})
}

func (s *optSet) intVar(p *int, short byte, long, value, help string) {
	s.add(&opt{short: short, long: long, value: value, help: help, isValue: true, set: func(v string) error {
		n, err := strconv.Atoi(v)
		if errors.Is(err, strconv.ErrRange) {
			// 3 GiB is a number, but not an int where int is 32 bits.
			return fmt.Errorf("out of range (%d bits): %q", strconv.IntSize, v)
		}
		if err != nil {
			return fmt.Errorf("not a number: %q", v)
		}
		*p = n
		return nil
	}})
}

// durationVar takes a positive duration ("3s", "1m30s"), checked here so
// every command reports a bad one the same way.
func (s *optSet) durationVar(p *time.Duration, short byte, long, value, help string) {
	s.add(&opt{short: short, long: long, value: value, help: help, isValue: true, set: func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("%q: not a positive duration", v)
		}
		*p = d
		return nil
	}})
}

func (s *optSet) find(short byte, long string) *opt {
	for _, o := range s.opts {
		if short != 0 && o.short == short || long != "" && o.long == long {
			return o
		}
	}
	return nil
}

// parse applies the options in args and returns the other arguments.
func (s *optSet) parse(args []string) ([]string, error) {
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return append(rest, args[i+1:]...), nil
		case a == "-h" || a == "--help":
			return nil, errHelp
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			o := s.find(0, name)
			if o == nil {
				return nil, fmt.Errorf("unknown option --%s", name)
			}
			if o.isValue && !hasVal {
				if i+1 >= len(args) {
					return nil, fmt.Errorf("option --%s needs a value", name)
				}
				i++
				val = args[i]
			} else if !o.isValue && hasVal {
				return nil, fmt.Errorf("option --%s takes no value", name)
			}
			if err := o.set(val); err != nil {
				return nil, fmt.Errorf("option --%s: %w", name, err)
			}
		case len(a) > 1 && a[0] == '-':
			for j := 1; j < len(a); j++ {
				o := s.find(a[j], "")
				if o == nil {
					return nil, fmt.Errorf("unknown option -%c", a[j])
				}
				if !o.isValue {
					if err := o.set(""); err != nil {
						return nil, err
					}
					continue
				}
				val := a[j+1:]
				if val == "" {
					if i+1 >= len(args) {
						return nil, fmt.Errorf("option -%c needs a value", a[j])
					}
					i++
					val = args[i]
				}
				if err := o.set(val); err != nil {
					return nil, fmt.Errorf("option -%c: %w", a[j], err)
				}
				break
			}
		default:
			rest = append(rest, a)
		}
	}
	return rest, nil
}

// usage prints one line per option.
func (s *optSet) usage(w io.Writer) {
	for _, o := range s.opts {
		var names []string
		if o.short != 0 {
			names = append(names, "-"+string(o.short))
		}
		if o.long != "" {
			names = append(names, "--"+o.long)
		}
		spec := strings.Join(names, ", ")
		if o.value != "" {
			spec += " " + o.value
		}
		fmt.Fprintf(w, "  %-28s %s\n", spec, o.help)
	}
}
