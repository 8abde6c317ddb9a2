namespace Migration.PageServer.Store;

/// <summary>Counters of a <see cref="PageStore"/>, taken at one moment.</summary>
/// <param name="Targets">Targets (pagemaps) opened or written.</param>
/// <param name="CompletedRounds">Rounds acknowledged durable by <see cref="PageStore.CompleteRoundAsync"/>.</param>
/// <param name="PagesReceived">Pages of every run received, present, lazy and parent alike.</param>
/// <param name="PagesOverwritten">Received pages whose address the store already held (the newer copy or mark won).</param>
/// <param name="BytesStored">Bytes appended to the data files, superseded copies included: the disk the store uses.</param>
/// <param name="LivePages">Present pages the store holds now (one per address): what <c>pages-N.img</c> files will hold.</param>
public readonly record struct PageStoreStats(
    int Targets,
    int CompletedRounds,
    long PagesReceived,
    long PagesOverwritten,
    long BytesStored,
    long LivePages);
