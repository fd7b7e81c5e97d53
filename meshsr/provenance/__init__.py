"""Content digests of input files and fingerprints of the library code that makes each output."""
