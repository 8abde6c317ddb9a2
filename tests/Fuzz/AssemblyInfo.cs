// The over-budget check measures allocation process-wide (async work hops threads): tests running beside it in the
// same process would be counted as the input's. One test at a time.
[assembly: Xunit.CollectionBehavior(DisableTestParallelization = true)]
