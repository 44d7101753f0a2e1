using SharpTune.Native;
TorchRuntime.EnsureLoaded();
Console.WriteLine("ok");
