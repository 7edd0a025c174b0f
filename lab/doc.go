// Package lab holds the experiments that measure the toolkit's trade-offs
// on the machine at hand: each subpackage runs one pattern under a stated
// load and prints its setup and figures. `sysops bench ...` runs them.
package lab
