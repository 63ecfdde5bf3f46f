// Package goexamples holds no code: its test builds each Go example under
// it (each its own module, as a user's would be) outside this repository
// and runs it as a real worker process against a claimcheck stack. That an
// example builds from another module proves it uses only public packages:
// an internal/ import does not compile there.
package goexamples
