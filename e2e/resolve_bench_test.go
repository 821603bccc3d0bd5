package e2e

import (
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modautoload/modautoload/loader"
)

// Resolver benchmarks on the Debian kernel's module directory, beside
// libkmod on the same inputs in the same run. make bench-resolve runs them:
//
//	go test ./e2e -run '^$' -bench 'Resolve|Libkmod|FirstAnswer' -benchtime 3x
//
// One op of the lookup benchmarks is a pass over every input of
// aliasInputs (about 128,000); the lookups/s metric is what to compare.

// BenchmarkResolverLookup does what the libkmod benchmark does: look the
// input up and read each module's dependencies.
func BenchmarkResolverLookup(b *testing.B) {
	k := KernelFor(b)
	inputs := benchInputs(b, k)
	r := openResolver(b, k.ModulesDir(), []string{b.TempDir()})
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for _, in := range inputs {
			mods, _ := r.Lookup(in)
			for _, m := range mods {
				if _, err := r.Dependencies(m); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.ReportMetric(float64(len(inputs)*b.N)/b.Elapsed().Seconds(), "lookups/s")
}

// BenchmarkResolverPlan is the whole answer the daemon needs: lookup,
// blacklist, dependencies, soft dependencies, options, install commands.
func BenchmarkResolverPlan(b *testing.B) {
	k := KernelFor(b)
	inputs := benchInputs(b, k)
	r := openResolver(b, k.ModulesDir(), []string{b.TempDir()})
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for _, in := range inputs {
			if _, err := r.Resolve(in, loader.ResolveOptions{}); err != nil && !errors.Is(err, loader.ErrBadName) && !errors.Is(err, loader.ErrNotFound) {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(len(inputs)*b.N)/b.Elapsed().Seconds(), "lookups/s")
}

// BenchmarkLibkmodLookup times kmod_module_new_from_lookup plus
// kmod_module_get_dependencies in kmodref, on the same inputs; only the
// lookup loop is timed, as for the resolver.
func BenchmarkLibkmodLookup(b *testing.B) {
	k := KernelFor(b)
	inputs := benchInputs(b, k)
	bin, err := kmodref()
	if err != nil {
		b.Fatal(err)
	}
	var lookups, seconds float64
	for b.Loop() {
		cmd := exec.Command(bin, "bench", k.ModulesDir(), "1", b.TempDir())
		cmd.Stdin = strings.NewReader(strings.Join(inputs, "\n") + "\n")
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("kmodref: %v", err)
		}
		f := strings.Fields(string(out)) // lookups N seconds S
		if len(f) != 4 {
			b.Fatalf("kmodref printed %q", out)
		}
		n, _ := strconv.ParseFloat(f[1], 64)
		s, _ := strconv.ParseFloat(f[3], 64)
		lookups += n
		seconds += s
	}
	b.ReportMetric(lookups/seconds, "lookups/s")
}

// BenchmarkFirstAnswer is the time from exec to the answer of one
// resolve, the cost a kernel request_module or an init script pays;
// BenchmarkFirstAnswerModprobe is kmod's modprobe doing the same.
func BenchmarkFirstAnswer(b *testing.B) {
	k := KernelFor(b)
	bin := BuildBinary(b, "./cmd/modautoload")
	benchExec(b, bin, "resolve", "-d", k.Root, "-S", k.Version, "-C", b.TempDir(), benchModalias)
}

func BenchmarkFirstAnswerModprobe(b *testing.B) {
	k := KernelFor(b)
	benchExec(b, "modprobe", "-d", k.Root, "-S", k.Version, "-C", b.TempDir(), "--show-depends", benchModalias)
}

// benchModalias is the e1000's, as qemu presents it.
const benchModalias = "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"

func benchExec(b *testing.B, name string, args ...string) {
	var total time.Duration
	for b.Loop() {
		start := time.Now()
		out, err := exec.Command(name, args...).Output()
		total += time.Since(start)
		if err != nil || !strings.Contains(string(out), "e1000.ko") {
			b.Fatalf("%s: %v, output %q", name, err, out)
		}
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms/answer")
}

func benchInputs(b *testing.B, k *Kernel) []string {
	b.Helper()
	return aliasInputs(b, k.ModulesDir())
}
