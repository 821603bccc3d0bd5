package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/loader"
	"github.com/modautoload/modautoload/loader/modprobed"
)

// moduleOptions are the options that say which modules and which policy:
// the same letters as kmod's modprobe.
type moduleOptions struct {
	basedir string
	kver    string
	config  []string
}

func (o *moduleOptions) register(s *optSet) {
	s.stringVar(&o.basedir, 'd', "basedir", "DIR", "root holding lib/modules (default /)")
	s.stringVar(&o.basedir, 0, "dirname", "DIR", "the same as --basedir (kmod's modprobe name)")
	s.stringVar(&o.kver, 'S', "set-version", "VERSION", "kernel version (default: the running kernel's)")
	s.stringsVar(&o.config, 'C', "config", "PATH", "modprobe.d file or directory instead of the standard ones; repeatable")
}

// moduleDir is the module directory the options name.
func (o *moduleOptions) moduleDir() (string, error) {
	kver := o.kver
	if kver == "" {
		var u unix.Utsname
		if err := unix.Uname(&u); err != nil {
			return "", fmt.Errorf("uname: %w", err)
		}
		kver = unix.ByteSliceToString(u.Release[:])
	}
	if kver == "" || strings.ContainsAny(kver, "/\x00") || kver == "." || kver == ".." {
		return "", fmt.Errorf("bad kernel version %q", kver)
	}
	return loader.ModuleDir(o.basedir, kver), nil
}

// resolver opens the module database and reads the configuration, with
// the kernel command line as libkmod reads it. Config problems are returned
// for the caller to report; they do not stop anything.
func (o *moduleOptions) resolver() (*loader.Resolver, []error, error) {
	dir, err := o.moduleDir()
	if err != nil {
		return nil, nil, err
	}
	db, err := loader.OpenDB(dir)
	if err != nil {
		return nil, nil, err
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil && !os.IsNotExist(err) {
		db.Close()
		return nil, nil, err
	}
	cfg, err := modprobed.Load(modprobed.LoadOptions{
		Paths:     o.config,
		ModuleDir: dir,
		Cmdline:   string(cmdline),
	})
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	problems := append(append([]error(nil), db.Problems...), cfg.Problems...)
	return &loader.Resolver{DB: db, Config: cfg}, problems, nil
}

// openResolver is resolver for the commands: configuration problems are
// logged, not fatal.
func (o *moduleOptions) openResolver(log zerolog.Logger) (*loader.Resolver, error) {
	r, problems, err := o.resolver()
	for _, p := range problems {
		log.Warn().Err(p).Msg("configuration line skipped")
	}
	if err != nil {
		return nil, fmt.Errorf("cannot open the module database: %w", err)
	}
	return r, nil
}
