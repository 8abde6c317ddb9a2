using Xunit;

// The tests create namespaces, run CRIU and move real processes on a 2-core machine: one at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
