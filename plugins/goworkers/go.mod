module tether.example/goworkers

go 1.19
