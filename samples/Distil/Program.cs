// Trains a tiny teacher from scratch on the synthetic instruction task, distils it into a smaller LoRA student
// (the shipped configs tiny/teacher_full_single_device and tiny/kd_lora_single_device), then compares the two on a
// held-out prompt's answer. Runs in well under a minute on a laptop CPU.
//   dotnet run --project samples/Distil -- [output folder]
using SharpTune;
using SharpTune.Recipes;

var root = Path.GetFullPath(args.Length > 0 ? args[0] : "runs/distil-sample");
void Print(RecipeEvent e)
{
    if (e.Kind == "metrics" && e.Metrics!.TryGetValue("loss", out var loss) && e.Step % 10 == 0) Console.WriteLine($"  step {e.Step,4}  loss {loss:F3}");
    else if (e.Kind == "warning") Console.WriteLine($"  warning: {e.Message}");
}

Console.WriteLine("teacher: full fine-tune from scratch");
Tune.Run("full_finetune_single_device", "tiny/teacher_full_single_device", [$"output_dir={root}/teacher"], Print);
Console.WriteLine("student: knowledge distillation (LoRA)");
var student = Tune.Distil($"{root}/teacher/epoch_0", $"{root}/student",
    overrides: [$"checkpointer.checkpoint_dir={root}/student_init"], onEvent: Print);
Console.WriteLine($"student written to {student}");
return 0;
