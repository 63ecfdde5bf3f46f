//go:build race

package app_test

// raceDetector is set in a -race build, whose runtime keeps memory
// differently: tests that measure what a stream holds skip their
// measurement there (.ci/run runs them again without -race).
const raceDetector = true
