module crunch/bench/fibserver

go 1.19
