"""The data layer: find a dataset folder, group slices into pseudo-patients,
split without leakage, and measure how much a split leaks."""
