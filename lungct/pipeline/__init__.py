"""The product path: files -> read -> decode -> guard -> segment -> classify -> findings ->
verdict -> report, one slice object carried through every stage."""
