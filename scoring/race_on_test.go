//go:build race

package scoring

// raceEnabled: the race detector changes allocation sizes and slows
// everything down ~10x; memory measurements are skipped under it.
const raceEnabled = true
