# Vitis HLS flow for softmax_rows on the PYNQ-Z2 (xc7z020clg400-1, 10 ns clock).
# Usage:  vitis_hls -f run_hls.tcl -tclargs csim csynth cosim export
# Steps run in the order csim, csynth, cosim, export whatever order they are given in; with no
# arguments the script runs csim and csynth (cosim and export need csynth in the same or an earlier run).
set kernel softmax_rows
set known {csim csynth cosim export}
set steps {}
if {[info exists argv]} { set steps $argv }
if {[llength $steps] == 0} { set steps {csim csynth} }
foreach step $steps {
    if {[lsearch -exact $known $step] < 0} {
        puts "run_hls.tcl: unknown step '$step' (known: $known)"
        exit 1
    }
}
set here [file dirname [file normalize [info script]]]

open_project -reset prj_$kernel
set_top $kernel
add_files $here/$kernel.cpp -cflags "-std=c++14 -I$here"
add_files -tb $here/${kernel}_tb.cpp -cflags "-std=c++14 -I$here"
open_solution -reset sol1 -flow_target vivado
set_part xc7z020clg400-1
create_clock -period 10 -name default

if {[lsearch -exact $steps csim] >= 0} { csim_design }
if {[lsearch -exact $steps csynth] >= 0} { csynth_design }
if {[lsearch -exact $steps cosim] >= 0} { cosim_design }
if {[lsearch -exact $steps export] >= 0} { export_design -format ip_catalog -rtl verilog }
exit
