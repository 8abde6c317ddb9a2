namespace Migration.Engine.Processes;

/// <summary>
/// A task's memory as CRIU dumps it into the task's own pagemap: <paramref name="Pid"/> is the pid CRIU names the
/// task by (in its innermost pid namespace), <paramref name="Bytes"/> its resident private anonymous memory
/// (shared memory goes into shmem images of its own).
/// </summary>
public readonly record struct TaskMemory(int Pid, ulong Bytes);
