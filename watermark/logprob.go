package watermark

// Logprob signal frequency range (cycles over the unit phase interval).
const (
	minFreq = 4
	maxFreq = 32
)
