module wsfleet.local/benchrecv

go 1.22
