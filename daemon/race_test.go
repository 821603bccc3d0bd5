//go:build race

package daemon

// raceEnabled: the race detector slows everything several times over, so
// timing bounds are not checked under it.
const raceEnabled = true
