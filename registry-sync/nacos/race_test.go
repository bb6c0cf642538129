//go:build race

package nacos_test

// race is true when the tests run under the race detector.
const race = true
