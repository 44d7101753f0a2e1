namespace SharpTune.Recipes;
