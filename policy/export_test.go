package policy

// BruteForce returns a copy of p that decides by looking at every rule of the
// workload's upstream and running every condition: the reference Decide's indexes
// must agree with.
func BruteForce(p *Policy) *Policy {
	cp := *p
	cp.bruteForce = true
	return &cp
}
