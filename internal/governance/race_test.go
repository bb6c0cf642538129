//go:build race

package governance

func init() { raceEnabled = true }
