// libtorch's default random generator, its thread count and the process heap are global: tests that seed, set
// threads or measure RSS would corrupt each other if xunit ran test classes in parallel. On the 2-core CI machine
// parallel classes buy little anyway (libtorch already uses both cores), so run them one after another.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
