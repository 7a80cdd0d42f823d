System.Console.WriteLine("cli");
