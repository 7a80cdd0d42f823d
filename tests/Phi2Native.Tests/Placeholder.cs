namespace Phi2Native.Tests; public class Placeholder { [NUnit.Framework.Test] public void Ok() => NUnit.Framework.Assert.That(1, NUnit.Framework.Is.EqualTo(1)); }
