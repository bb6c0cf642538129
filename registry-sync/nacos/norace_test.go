//go:build !race

package nacos_test

const race = false
