package index

import (
	"path/filepath"
	"testing"

	"github.com/modautoload/modautoload/internal/fnmatch"
)

// Modaliases as the kernel sends them, for the fixture and for a full
// Debian module tree (set MODAUTOLOAD_MODULE_DIR to ROOT/lib/modules/KVER
// to run the "full" benchmarks).
var benchAliases = []string{
	"cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0001,0002,0003,0004,0005,0006,0007,0008,0009,000B,000C,000D,000E,000F,0010,0011,0013,0015,0016,0017,0018,0019,001A,001B,001C,001D,001F,002B,0034,003A,003B,003D,0068,006F,0070,0072,0074,0075,0076,0079,0080,0081,0085,0087,0089,008C,008D,0091,0093,0094,0095,0096,0097,0098,0099,009A,009B,009C,009D,00C0,00C5,00E1,00E3,00E4,00E6,00E7,00EB,00EC,00F0,00F1,00F3,00F5,00F6,00F9,00FA,00FB,00FD,0100,0101,0102,0103,0104,0111,0120,0121,0123,0125,0127,0128,0129,012A,012D,0140,0160,0161,0165,01C0,01C1,01C2,01C4,01C5,01C6,024A,025A,025B,025C,025F",
	"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
	"pci:v00008086d000015B8sv000017AAsd0000225Dbc02sc00i00",
	"usb:v0BC2p2322d0100dc00dsc00dp00ic08isc06ip50in00",
	"acpi:ACPI0007:",
	"dmi:bvnDellInc.:bvr2.3.1:bd01/01/2020:br2.3:svnDellInc.:pnXPS139360:pvr:rvnDellInc.:rn0596KF:rvrA00:cvnDellInc.:ct10:cvr:",
	"virtio:d00000001v00001AF4",
}

func benchSearchWild(b *testing.B, ix *Trie) {
	b.ReportAllocs()
	for b.Loop() {
		for _, a := range benchAliases {
			if _, err := ix.SearchWild(a); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(benchAliases)), "ns/lookup")
}

func BenchmarkSearchWild(b *testing.B) {
	b.Run("fixture", func(b *testing.B) {
		benchSearchWild(b, openTrie(b, filepath.Join(fixtureDir, KindAlias.BinName())))
	})
	b.Run("full", func(b *testing.B) {
		benchSearchWild(b, openTrie(b, filepath.Join(realModuleDir(b), KindAlias.BinName())))
	})
}

func BenchmarkSearch(b *testing.B) {
	for name, dir := range map[string]string{"fixture": fixtureDir, "full": ""} {
		b.Run(name, func(b *testing.B) {
			if dir == "" {
				dir = realModuleDir(b)
			}
			ix := openTrie(b, filepath.Join(dir, KindDep.BinName()))
			b.ReportAllocs()
			for b.Loop() {
				if v, err := ix.Search("usb_storage"); err != nil || len(v) != 1 {
					b.Fatal(v, err)
				}
			}
		})
	}
}

func BenchmarkLoadText(b *testing.B) {
	order, err := LoadOrder(fixtureDir)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := LoadText(filepath.Join(fixtureDir, "modules.alias"), KindAlias, order); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		fnmatch.Match("cpu:type:x86,ven*fam*mod*:feature:*0081*", benchAliases[0])
	}
}
